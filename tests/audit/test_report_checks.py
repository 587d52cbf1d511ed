"""``run_audit`` / ``run_audits`` refuse no attack, no model and a missing device before they write anything."""

from __future__ import annotations

import pytest

from silodiff.errors import SilodiffError


def test_the_audit_refuses_no_attack_and_no_model_before_writing(tmp_store, tmp_path):
    from silodiff.audit.report import run_audit, run_audits

    with pytest.raises(SilodiffError, match="give at least one attack"):
        run_audit(tmp_store, tmp_path / "one", "paragon", attacks=())
    with pytest.raises(SilodiffError, match="give a model"):
        run_audits(tmp_store, tmp_path / "none", ())
    with pytest.raises(SilodiffError, match="no-such-device"):
        run_audit(tmp_store, tmp_path / "dev", "paragon", device="no-such-device")
    assert not [d for d in ("one", "none", "dev") if (tmp_path / d).exists()]
