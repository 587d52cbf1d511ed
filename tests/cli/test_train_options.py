"""The training options every ``train`` command shares: declared once (``cli.common.TRAIN_OPTIONS``), turned into one
``TrainConfig`` by ``train_options``; ``--log-dir`` is an execution option, outside every recipe."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from silodiff.cli.common import SLICE_JOB, TRAIN_OPTIONS, TRAINING, train_options
from silodiff.cli.main import app
from silodiff.training import TrainConfig


def test_the_options_become_one_train_config():
    seen = {}
    demo = typer.Typer()

    @demo.command()
    @train_options(*TRAINING, epochs=7)
    def cmd(name: str = "x", *, config) -> None:
        seen.update(name=name, config=config)

    r = CliRunner().invoke(demo, ["--lr", "0.1", "--log-dir", "runs", "--name", "y", "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert seen == {"name": "y", "config": TrainConfig(epochs=7, lr=0.1, seed=3, log_dir="runs")}
    r = CliRunner().invoke(demo, ["--precision", "bf16"])  # not one of the fields it asked for
    assert r.exit_code == 2


def test_every_train_command_takes_its_options_from_the_one_declaration():
    group = typer.main.get_command(app).commands["train"]
    helps = {f: TRAIN_OPTIONS[f][0].__metadata__[0].help for f in SLICE_JOB}
    for name, cmd in group.commands.items():
        params = {p.name: p for p in cmd.params}
        assert "log_dir" in params and params["log_dir"].opts == ["--log-dir"], name
        for field, help_ in helps.items():
            if field in params and not (name == "iet-agc" and field == "epochs"):  # iet-agc: local epochs per round
                assert params[field].help == help_, (name, field)


def test_log_dir_is_not_part_of_the_recipe():
    plain, logged = TrainConfig(epochs=3), TrainConfig(epochs=3, log_dir="runs/a")
    assert "log_dir" not in logged.recipe_dict() and logged.recipe_dict() == plain.recipe_dict()
    assert logged.to_dict()["log_dir"] == "runs/a"  # it still travels with the config to the worker that trains
