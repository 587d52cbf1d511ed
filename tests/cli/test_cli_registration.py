"""``cli/main.py`` registers every command explicitly: ``silodiff --help`` lists the same commands and groups as
before the registration was made explicit (the literal list below was taken from that ``--help``)."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from silodiff.cli.main import app

TOP_LEVEL = ["sample", "quality", "demo", "forget", "add-source", "attribute", "serve", "audit", "export",
             "data", "train", "catalog", "certificate", "keys"]
GROUPS = {
    "data": ["ingest", "list", "show"],
    "train": ["compartments", "paragon", "router", "encoded", "iet-agc", "protection-classifier", "base"],
    "catalog": ["sources", "compartments", "artifacts", "lineage", "saw", "events", "verify"],
    "certificate": ["verify", "list"],
    "keys": ["create", "list", "revoke"],
}


def test_the_app_has_exactly_these_commands():
    root = typer.main.get_command(app)
    assert sorted(root.commands) == sorted(TOP_LEVEL)
    assert {name: sorted(root.commands[name].commands) for name in GROUPS} == {k: sorted(v) for k, v in GROUPS.items()}
    assert not [name for name in TOP_LEVEL if name not in GROUPS and hasattr(root.commands[name], "commands")]


def test_help_lists_them_in_order():
    out = CliRunner().invoke(app, ["--help"]).stdout
    listed = [line.split()[0] for line in out.split("Commands:", 1)[1].splitlines() if line.startswith("  ") and
              not line.startswith("   ")]
    assert listed == TOP_LEVEL
    train = CliRunner().invoke(app, ["train", "--help"]).stdout
    assert [line.split()[0] for line in train.split("Commands:", 1)[1].splitlines() if line.startswith("  ")
            and not line.startswith("   ")] == GROUPS["train"]
