"""The main job end to end on the embedded digits data (``silodiff demo`` / ``make demo``).

``runner.run_demo`` trains the demo store and calls each step; every step is a
module of its own here with ``demo_step(store, out, plan) -> str`` (a Markdown
section): ``defences``, ``attribution``, ``rights`` (two keys served over HTTP),
``audit``, ``forgetting`` and the optional ``ray_replay``; ``adapters`` builds the
base + LoRA store; ``quality`` the FLD rows; ``report`` writes ``report.md``;
``plan`` says how much of each a run does (short default, ``--full``, quick).  Library modules write no
demo Markdown: it all lives here.
"""

from .plan import FULL, QUICK, SHORT, DemoPlan, demo_plan
from .runner import run_demo

__all__ = ["DemoPlan", "FULL", "QUICK", "SHORT", "demo_plan", "run_demo"]
