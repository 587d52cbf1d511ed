"""The demo step: two keys with different rights, each served only its compartments over HTTP."""

from __future__ import annotations

from silodiff.demo import QUICK
from silodiff.demo.rights import demo_step
from silodiff.service import list_keys


def test_demo_step_serves_each_key_only_its_compartments(fresh_store, tmp_path, capsys):
    md = demo_step(fresh_store, tmp_path / "out", QUICK)
    assert "Each key got only its own compartments: True" in md
    # source-0 for customer-a, source-1 + source-2 for customer-b; each denied the other's compartment
    assert "| customer-a | source-0 | source-0 | source-0 | trajectory |" in md
    assert "| customer-b | source-1, source-2 | source-1, source-2 | source-1, source-2 | trajectory |" in md
    assert "source-1 → 403" in md and "source-0 → 403" in md
    for name in ("customer-a", "customer-b"):
        assert (tmp_path / "out" / f"service-{name}.png").stat().st_size > 0
        assert f"service-{name}-weights.png" in md
    assert {"demo-customer-a", "demo-customer-b"} <= {k["name"] for k in list_keys(fresh_store)}
    assert "server stopped" in capsys.readouterr().out
