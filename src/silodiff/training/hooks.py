"""Training hooks as plain data, so jobs that run in other processes can rebuild them.

A hook class is ``@register``-ed (``silodiff.config``), so its init kwargs are
its ``config``.  ``hook_spec(hook)`` is ``{"module": <defining module>,
"config": hook.config}``; ``build_hooks(specs)`` imports each module (only
``silodiff.*``) and rebuilds the hook with ``config.build``.  A hook may also
define ``report() -> dict`` (JSON, kept with the artifact's config) and
``summary() -> dict`` (a few numbers for the artifact's catalog metrics).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from ..config import build
from ..errors import SilodiffError


def hook_spec(hook: Any) -> dict[str, Any]:
    """The plain-data form of a registered hook."""
    if not hasattr(hook, "config"):
        raise SilodiffError(f"{type(hook).__name__} is not a registered hook (decorate it with @register)")
    return {"module": type(hook).__module__, "config": dict(hook.config)}


def build_hooks(specs: Sequence[dict[str, Any]]) -> list[Any]:
    """Rebuild hooks from ``hook_spec`` dicts (fresh state: banks and counters start empty)."""
    hooks = []
    for spec in specs:
        module = spec.get("module", "")
        if not module.startswith("silodiff."):
            raise SilodiffError(f"hook module {module!r} is not part of silodiff")
        importlib.import_module(module)
        hooks.append(build(spec["config"]))
    return hooks


def hook_reports(hooks: Sequence[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(reports for the artifact config, summaries for its catalog metrics), keyed by hook kind."""
    reports = {h.kind: h.report() for h in hooks if hasattr(h, "report")}
    summaries = {f"{h.kind}_{k}": v for h in hooks if hasattr(h, "summary") for k, v in h.summary().items()}
    return reports, summaries
