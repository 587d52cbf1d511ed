"""The CLI's one convention (docs/cli/conventions.md), checked on every command of the Typer app:
``--help`` everywhere, ``--json`` that parses wherever a command reports, the same training flags on every
``train`` sub-command, one list syntax (a repeated flag adds values), no hidden options, and the
exit-code rule (0 ok, 1 a failed verification, 2 bad input, 3 unexpected; ``--debug`` for the traceback)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from silodiff.cli.main import app

runner = CliRunner()
NOT_REPORTING = {("serve",)}  # runs a server: prints its log, not a report
TRAINING_FLAGS = {"--epochs", "--batch-size", "--lr", "--seed", "--device", "--log-dir"}


def walk(cmd, path: tuple[str, ...] = ()):
    """(path, command) for the root, every group and every command (duck-typed: Typer may vendor click)."""
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from walk(sub, (*path, name))


COMMANDS = list(walk(typer.main.get_command(app)))
LEAVES = [(p, c) for p, c in COMMANDS if not hasattr(c, "commands")]


def flags(cmd) -> set[str]:
    return {o for p in cmd.params if p.param_type_name == "option" for o in p.opts}


def test_the_walk_finds_every_command():
    names = {" ".join(p) for p, _ in LEAVES}
    assert {"data ingest", "data list", "data show", "train compartments", "train paragon", "train router",
            "train encoded", "train iet-agc", "train protection-classifier", "sample", "quality", "forget",
            "certificate verify", "certificate list", "add-source", "keys create", "attribute", "audit",
            "catalog events", "serve", "demo"} <= names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "silodiff")
def test_every_command_has_help(path):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0 and "Usage" in result.stdout, result.output


@pytest.mark.parametrize("path, cmd", LEAVES, ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_every_reporting_command_takes_json(path, cmd):
    assert ("--json" in flags(cmd)) == (path not in NOT_REPORTING)


@pytest.mark.parametrize("path, cmd", [(p, c) for p, c in LEAVES if p[0] == "train"], ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_every_train_command_takes_the_same_training_flags(path, cmd):
    assert TRAINING_FLAGS <= flags(cmd)


def test_one_flag_one_meaning():
    """``--sources`` names rights: what one key may use (keys create), or what every key may use (train base,
    which declares its sources public); the ingest scheme is ``--assign``."""
    with_sources = {" ".join(p) for p, c in LEAVES if "--sources" in flags(c)}
    assert with_sources == {"keys create", "train base"}
    assert {" ".join(p) for p, c in LEAVES if "--assign" in flags(c)} == {"data ingest", "add-source"}
    assert not [p for p, c in LEAVES if "--label" in flags(c)]  # `--labels` everywhere


def test_sample_and_attribute_default_to_the_same_n():
    defaults = {p: next(x.default for x in c.params if x.name == "n") for p, c in LEAVES if p in {("sample",), ("attribute",)}}
    assert len(set(defaults.values())) == 1, defaults


# ----------------------------------------------------------------------------- --json parses
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("conv") / "st"
    r = runner.invoke(app, ["data", "ingest", "--store", str(root), "--limit", "40", "--assign", "random:2", "--json"])
    assert r.exit_code == 0, r.output
    for args in (["train", "compartments", "--slices", "1"], ["train", "paragon", "--slices", "1"], ["train", "router"]):
        r = runner.invoke(app, [*args, "--store", str(root), "--epochs", "1", "--batch-size", "16", "--json"])
        assert r.exit_code == 0, r.output
        json.loads(r.stdout)
    return root


def run_json(*args):
    r = runner.invoke(app, [str(a) for a in args] + ["--json"])
    assert r.exit_code == 0, f"{args}: {r.output}"
    return json.loads(r.stdout)


def test_reporting_commands_print_json_that_parses(store, tmp_path):
    s = ["--store", store]
    sources = run_json("catalog", "sources", *s)
    assert sorted(x["name"] for x in sources) == ["source-0", "source-1"]
    ids = [row["sample_id"] for row in run_json("data", "list", *s)]
    assert len(ids) == 40 and len(run_json("data", "list", *s, "--source", "source-0", "--limit", "3")) == 3
    shown = run_json("data", "show", *s, ids[0], "--png", tmp_path / "x.png")
    assert shown["sample_id"] == ids[0] and {a["kind"] for a in shown["artifacts"]} >= {"compartment", "paragon"}
    assert (tmp_path / "x.png").stat().st_size > 0
    artifacts = run_json("catalog", "artifacts", *s)
    assert run_json("catalog", "lineage", *s, artifacts[0]["hash"][:12])["n"] > 0
    assert run_json("catalog", "saw", *s, ids[0])
    assert run_json("catalog", "compartments", *s)
    assert run_json("catalog", "verify", *s)["ok"] is True
    made = run_json("sample", *s, "--n", 2, "--steps", 2, "--out", tmp_path / "smp")
    assert made["n"] == 2 and made["compartments"] == ["source-0", "source-1"]
    key = run_json("keys", "create", *s, "--name", "k1", "--sources", "source-0")
    assert key["key"] and [k["name"] for k in run_json("keys", "list", *s)] == ["k1"]
    assert run_json("keys", "revoke", *s, "k1")
    plan = run_json("forget", *s, "--sample", ids[0], "--dry-run")
    assert plan["forget_ids"] == [ids[0]]
    assert run_json("certificate", "list", *s) == []


def test_events_json_has_full_payloads(store):
    events = run_json("catalog", "events", "--store", store, "--limit", 100)
    assert all(isinstance(e["payload"], dict) for e in events)
    ingest = next(e for e in events if e["kind"] == "ingest")
    table = runner.invoke(app, ["catalog", "events", "--store", str(store), "--limit", "100"]).stdout
    assert len(json.dumps(ingest["payload"])) > 0 and "ingest" in table


# ----------------------------------------------------------------------------- one list syntax, one spelling
def test_a_comma_list_and_a_repeated_flag_agree_without_a_note(store):
    a, b = [r["sample_id"] for r in run_json("data", "list", "--store", store, "--limit", 2)]
    new = runner.invoke(app, ["forget", "--store", str(store), "--sample", f"{a},{b}", "--dry-run", "--json"])
    old = runner.invoke(app, ["forget", "--store", str(store), "--sample", a, "--sample", b, "--dry-run", "--json"])
    assert new.exit_code == old.exit_code == 0, old.output
    assert json.loads(new.stdout)["request"] == json.loads(old.stdout)["request"]
    assert json.loads(new.stdout)["request"]["sample_ids"] == sorted([a, b])
    assert new.stderr == old.stderr == ""


def test_no_command_has_hidden_options():
    assert not [(p, o.opts) for p, c in LEAVES for o in c.params if getattr(o, "hidden", False)]


@pytest.mark.parametrize("argv", [["data", "ingest", "--sources", "single:a"], ["attribute", "--label", "3"],
                                  ["train", "iet-agc", "--local-epochs", "2"], ["train", "--method", "paragon"]],
                         ids=lambda a: " ".join(a))
def test_the_old_spellings_are_usage_errors(argv, tmp_path):
    r = runner.invoke(app, [*argv, "--store", str(tmp_path / "s")])
    assert r.exit_code == 2 and "No such option" in r.output and not (tmp_path / "s").exists()


# ----------------------------------------------------------------------------- exit codes
def test_exit_codes(store, monkeypatch):
    ok = runner.invoke(app, ["catalog", "sources", "--store", str(store)])
    assert ok.exit_code == 0
    bad = runner.invoke(app, ["catalog", "saw", "--store", str(store), "nope"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
    usage = runner.invoke(app, ["catalog", "sources", "--store", str(store), "--no-such-flag"])
    assert usage.exit_code == 2

    from silodiff.store import catalog

    def broken(self, *a, **k):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(catalog.Catalog, "sources", broken)
    crash = runner.invoke(app, ["catalog", "sources", "--store", str(store)])
    assert crash.exit_code == 3 and crash.stdout == ""
    assert crash.stderr.count("\n") == 1 and crash.stderr.startswith("internal error: RuntimeError: disk on fire")
    assert "--debug" in crash.stderr and "Traceback" not in crash.output
    debug = runner.invoke(app, ["--debug", "catalog", "sources", "--store", str(store)])
    assert isinstance(debug.exception, RuntimeError)  # re-raised: Python prints its traceback


def test_a_failed_verification_exits_1(tmp_path):
    from silodiff.store import Store

    root = tmp_path / "s"
    assert runner.invoke(app, ["data", "ingest", "--store", str(root), "--limit", "8"]).exit_code == 0
    Store(root, create=False).catalog.db.execute("UPDATE events SET kind = 'forged' WHERE seq = 1")
    assert runner.invoke(app, ["catalog", "verify", "--store", str(root)]).exit_code == 1


# ----------------------------------------------------------------------------- start-up
LIGHT = "import sys; from silodiff.cli.main import main; sys.argv = {argv!r}\ntry:\n    main()\nexcept SystemExit as e:\n" \
        "    assert not e.code, e.code\nheavy = [m for m in ('torch', 'diffusers', 'fastapi') if m in sys.modules]\n" \
        "assert not heavy, heavy\n"


@pytest.mark.parametrize("argv", [["silodiff", "--help"], ["silodiff", "catalog", "sources", "--json"],
                                  ["silodiff", "keys", "list", "--json"], ["silodiff", "certificate", "list", "--json"],
                                  ["silodiff", "catalog", "events", "--json"]], ids=lambda a: " ".join(a[1:]))
def test_light_commands_never_import_torch(argv, store):
    argv = [*argv, "--store", str(store)] if len(argv) > 2 else argv
    r = subprocess.run([sys.executable, "-c", LIGHT.format(argv=argv)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_import_silodiff_is_light_and_names_resolve_lazily():
    code = ("import sys, silodiff as sd\nassert 'torch' not in sys.modules\n"
            "import silodiff.composition.build, silodiff.sample_files, silodiff.unlearning.forgetting\n"
            "assert callable(sd.compose) and callable(sd.generate) and callable(sd.forget)\n"
            "assert all(callable(getattr(sd, n)) for n in sd.__all__)\nprint(' '.join(sd.__all__))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert {"forget", "plan_forget", "verify_certificate", "add_source", "Store", "compose"} <= set(r.stdout.split())


def test_the_modules_behind_light_commands_never_import_torch():
    code = ("import sys\nimport silodiff.unlearning.certificate, silodiff.unlearning.journal, silodiff.service.keys\n"
            "from silodiff.unlearning import load_certificate, verify_certificate\n"
            "heavy = [m for m in ('torch', 'diffusers', 'fastapi') if m in sys.modules]\nassert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
