"""The main job end to end on the embedded digits data (``silodiff demo`` / ``make demo``).

``runner.run_demo`` trains the demo store and calls each step; every step is a
module of its own here with ``demo_step(store, out, quick) -> str`` (a Markdown
section): ``defences``, ``attribution``, ``rights`` (two keys served over HTTP),
``audit``, ``forgetting`` and the optional ``ray_replay``; ``adapters`` builds the
base + LoRA store; ``report`` writes ``report.md``.  Library modules write no
demo Markdown: it all lives here.
"""

from .runner import run_demo

__all__ = ["run_demo"]
