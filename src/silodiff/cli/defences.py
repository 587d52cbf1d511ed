"""``silodiff train iet-agc`` and ``silodiff train protection-classifier`` (memorisation defences).

``--agc`` on ``train compartments``/``train paragon`` and ``--cpsample`` on
``sample`` live beside those commands in ``cli/train.py`` and ``cli/sample.py``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Annotated

import typer

from .common import TRAINING, JsonOpt, StoreOpt, _names, _open, cli_errors, emit, train_options

if TYPE_CHECKING:
    from ..training import TrainConfig


@cli_errors
@train_options(*(f for f in TRAINING if f != "epochs"))  # its --epochs: local epochs per shard per round
def train_iet_cmd(
    store: StoreOpt,
    shards: Annotated[int, typer.Option(help="K class-balanced shards (reference 10).")] = 10,
    rounds: Annotated[int, typer.Option(help="R rounds of local training + weight averaging (reference 10).")] = 10,
    epochs: Annotated[float, typer.Option(help="E local epochs per shard per round.")] = 20,
    lam: Annotated[float, typer.Option(help="AGC λ: skip a sample when loss·λ < the bank's loss at its t.")] = 2.0,
    decay: Annotated[float, typer.Option(help="AGC bank EMA decay.")] = 0.8,
    no_agc: Annotated[bool, typer.Option("--no-agc", help="Plain IET (no anti-gradient control).")] = False,
    from_: Annotated[str | None, typer.Option("--from", help="Fine-tune from this trained artifact (hash or prefix).")] = None,
    name: Annotated[str | None, typer.Option(help="Artifact name (default: the kind, iet-agc or iet).")] = None,
    as_json: JsonOpt = False,
    *,
    config: TrainConfig,
) -> None:
    """Iterative ensemble training with anti-gradient control: one model whose lineage is ALL shards (not compartmentalised)."""
    from ..defences import train_iet

    summary = train_iet(_open(store), shards=shards, rounds=rounds, local_epochs=epochs,
                        agc=None if no_agc else {"lam": lam, "decay": decay}, init=from_, name=name,
                        config=config)
    if not as_json:
        summary.pop("top_skipped", None)
        summary["shard_sizes"] = ",".join(map(str, summary["shard_sizes"]))
    emit(summary, as_json)


@cli_errors
@train_options(*TRAINING, epochs=300)
def train_protection_cmd(
    store: StoreOpt,
    compartment: Annotated[str | None, typer.Option(help="Protect this compartment (trained on its samples only).")] = None,
    paragon: Annotated[bool, typer.Option(help="Protect the paragon.")] = False,
    artifact: Annotated[str | None, typer.Option(help="Protect another model artifact (e.g. IET-AGC), by hash.")] = None,
    all_compartments: Annotated[bool, typer.Option("--all-compartments", help="One classifier per trained compartment.")] = False,
    width: Annotated[int, typer.Option(help="Classifier width.")] = 64,
    target_accuracy: Annotated[float, typer.Option(help="Stop when training accuracy at t ≤ 100 reaches this.")] = 0.99,
    calibrate_on: Annotated[list[str] | None, typer.Option(
        "--calibrate-on", help="A source of non-member images (e.g. public) to calibrate on: the classifier learns to say ½ "
        "there, so the rule fires near training images only. They join its lineage (comma-separated).")] = None,
    calibration_weight: Annotated[float, typer.Option(help="Weight of the calibration loss.")] = 1.0,
    max_timestep: Annotated[int | None, typer.Option(
        help="Train on t < T only (the steps where the bits are knowable); the rule then never fires at t ≥ T.")] = None,
    as_json: JsonOpt = False,
    *,
    config: TrainConfig,
) -> None:
    """CPSample: train a classifier of random per-sample bits on noised training images (until it overfits)."""
    from ..defences import train_protection_classifier
    from ..store.lineage import trained_compartments

    st = _open(store)
    config = replace(config, label_dropout=0.0, ema_decay=0.99, max_timestep=max_timestep)
    targets = [{"compartment": c} for c in trained_compartments(st)] if all_compartments else \
        [{"compartment": compartment, "paragon": paragon, "artifact": artifact}]
    rows = []
    for target in targets:
        r = train_protection_classifier(st, **target, config=config, width=width, bit_seed=config.seed, target_accuracy=target_accuracy,
                                        calibration=_names(calibrate_on) or (), calibration_weight=calibration_weight)
        fires = r["fire_rate"]
        rows.append({k: r[k] for k in ("protects", "artifact", "n", "epochs", "train_accuracy")}
                    | {"accuracy_t500": r["accuracy_by_t"][500], "calibration_n": (r["calibration"] or {}).get("n", 0),
                       "fires_train_t0": fires["training"][0], "fires_heldout_t0": fires.get("held-out", {}).get(0)})
    emit(rows, as_json)
