"""The one training loop.  Everything that trains a denoiser goes through ``train``.

Per optimizer step (DDPM ε-objective, Ho et al. 2020), for each of
``grad_accum`` micro-batches:
  1. a batch from the ``DataLoader`` (uint8 rows, pinned when the device is
     CUDA), moved to the device; t ~ U{0..T-1}, ε ~ N(0, I) (and the optional
     horizontal flips) from the run's own generator, on the device;
  2. per-sample losses ``ℓ_j = mean((ε_θ(x_t, t_j, y_j) − ε_j)²)``, unreduced,
     the forward pass under ``autocast`` for bf16/fp16 (the loss in fp32);
  3. hooks see the batch and may return a keep-mask (memorisation defences);
  4. loss = mean of ℓ over kept samples, / grad_accum; backward;
then clip, AdamW, EMA.  fp16 scales the loss (``GradScaler``) and unscales
before clipping.  Master weights, EMA and optimizer state are fp32 throughout.

Batches: the sampler draws one permutation per epoch from the run's generator
(lazily, so with ``num_workers = 0`` the draw order is permutation, then per
batch label dropout, t, ε), and the dataset gathers a whole batch of rows at
once (no per-item Python).  Converting uint8 → [-1, 1] happens on the device.
A compartment fine-tuned from a base may replay the base's samples: a fixed
``replay`` share of every batch comes from them (``replay_batches``, a second
loader), so the adapter keeps what the base knows while it learns its owner's data.

The objective is pluggable (``loss_fn(model, batch, scheduler) -> (b,)``); the
default is the denoiser's own ``loss``; classifiers on noisy inputs pass
``classifier_loss(targets)`` (CPSample) or ``composition.routers.router_loss`` (the router).  Hooks are objects with any of
``on_batch(batch) -> mask | None`` and ``on_step(state)`` (which may set ``state.stop`` to end
the run after that step: early stopping, ``training.early_stop``); ``batch`` is a dict
with ``x0, labels, rows, ids, t, noise, loss``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from diffusers import DDPMScheduler
from tqdm.auto import tqdm

from ..data import ChunkBatches, ChunkedSamples, SampleSet
from ..devices import autocast, check_precision, device_of, grad_scaler, resolve_device, seeded
from ..errors import SilodiffError
from .parallel import all_reduce_grads, all_sum, shard, world
from .schedule import noise_scheduler
from .state import EMA, TrainState

REPLAY_SEED_OFFSET = 7919  # the replay loader's shuffle seed is the run's plus this (its own stream)

# fields that change where and how fast a run goes, not what it learns (left out of recipes)
EXECUTION_FIELDS = ("device", "num_workers", "compile", "log_dir")


@dataclass
class TrainConfig:
    """Hyperparameters of the loop (the defaults suit 8×8 digits on a CPU).

    ``batch_size`` is one micro-batch; an optimizer step sees ``batch_size · grad_accum``
    samples.  ``device``: auto | cpu | cuda | cuda:N | mps; ``precision``: fp32 | bf16 | fp16.
    ``log_dir``: write training curves for TensorBoard into ``log_dir/<run name>`` (``training.curves``;
    needs ``silodiff[tb]``); not part of the recipe, and left out of ``to_dict`` when unset.
    """

    epochs: int = 200
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    ema_decay: float = 0.995
    grad_clip: float = 1.0
    label_dropout: float = 0.1
    num_train_timesteps: int = 1000
    max_timestep: int | None = None  # draw t from [0, max_timestep) only (a classifier for the low-noise steps); None: all
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    grad_accum: int = 1
    hflip: bool = False  # random horizontal flips (for data where a mirror image is as likely)
    num_workers: int = 0  # DataLoader worker processes
    compile: bool = False  # torch.compile the model (see docs/guides/gpu.md for when it pays)
    val_fraction: float | None = None  # hold out this share of a job's samples, stop early on it (training.early_stop);
    # None: 0.1 for a full fine-tune from a base (jobs.base), else 0 (off)
    val_every: int = 0  # steps between held-out evaluations (0: early_stop.auto_every, 10 to 40 over the budget)
    patience: int = 8  # evaluations without a new best before stopping
    replay: float = 0.0  # share of each batch drawn from the base's samples (a compartment fine-tuned from a base);
    # the step count is unchanged: the compartment's own samples fill the rest of each batch
    log_dir: str | None = None  # TensorBoard curves here (an execution option: not in the recipe)

    def to_dict(self) -> dict[str, Any]:
        """All fields (what rebuilds the config in a worker); ``log_dir`` only when set, so the configs recorded
        in artifacts, and with them artifact hashes, are what they were before the option existed."""
        out = asdict(self)
        if out["log_dir"] is None:
            del out["log_dir"]
        return out

    def recipe_dict(self) -> dict[str, Any]:
        """The fields that decide what is learned (``EXECUTION_FIELDS`` and options at their defaults left out,
        so adding an execution option never changes an existing recipe)."""
        defaults = TrainConfig()
        new = ("precision", "grad_accum", "hflip", "val_fraction", "val_every", "patience", "replay")
        return {k: v for k, v in asdict(self).items()
                if k not in EXECUTION_FIELDS and not (k in new and v == getattr(defaults, k))}

    def check(self) -> "TrainConfig":
        for name in ("epochs", "batch_size", "num_train_timesteps", "grad_accum"):
            if getattr(self, name) < 1:
                raise SilodiffError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise SilodiffError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.label_dropout < 1:
            raise SilodiffError("label_dropout must be in [0, 1)")
        if self.max_timestep is not None and not 1 <= self.max_timestep <= self.num_train_timesteps:
            raise SilodiffError(f"max_timestep must be in 1..{self.num_train_timesteps}, got {self.max_timestep}")
        if self.val_fraction is not None and not 0 <= self.val_fraction < 1:
            raise SilodiffError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_every < 0 or self.patience < 1:
            raise SilodiffError(f"val_every must be ≥ 0 and patience ≥ 1, got {self.val_every} and {self.patience}")
        if not 0 <= self.replay < 1:
            raise SilodiffError(f"replay must be in [0, 1), got {self.replay}")
        if self.num_workers < 0:
            raise SilodiffError(f"num_workers must be ≥ 0, got {self.num_workers}")
        check_precision(self.precision, resolve_device(self.device))
        if self.log_dir is not None:
            from .curves import require_tensorboard

            require_tensorboard()
        return self


def noise_scheduler(num_train_timesteps: int = 1000) -> DDPMScheduler:
    """The training schedule of METHODS.md: T = 1000, linear β from 1e-4 to 0.02, ε-prediction."""
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


def denoising_loss(model: torch.nn.Module, batch: dict[str, Any], scheduler: DDPMScheduler) -> torch.Tensor:
    """The denoiser's own per-sample ε-loss, (b,)."""
    return model.loss(batch["x0"], batch["labels"], batch["t"], batch["noise"], scheduler)


@torch.no_grad()
def loss_grid(
    model: torch.nn.Module,
    x0: torch.Tensor,
    labels: torch.Tensor | None,
    timesteps: Sequence[int],
    *,
    draws: int = 1,
    generator: torch.Generator | None = None,
    scheduler: DDPMScheduler | None = None,
    copies: int = 1,
) -> torch.Tensor:
    """Per-sample ε-loss at each timestep of a grid, averaged over ``draws`` noise draws, (copies·n, G), on the CPU.

    Noise is drawn per (t, draw) in that order from ``generator`` (on its own device),
    so two models given equally seeded generators see exactly the same x_t.  ``copies``
    stacks the batch that many times (copy-major) with the same noise.  Membership
    attacks and the likelihood proxy of attribution both read this grid.  The work
    runs on the model's device.
    """
    if draws < 1:
        raise SilodiffError(f"draws must be ≥ 1, got {draws}")
    scheduler = scheduler or noise_scheduler()
    device = device_of(model, x0.device)
    x0 = x0.to(device)
    reps = (copies, *([1] * (x0.ndim - 1)))
    x_rep = x0.repeat(reps)  # (copies·n, c, h, w)
    y_rep = None if labels is None else labels.to(device).repeat(copies)
    out = torch.zeros(copies * len(x0), len(timesteps), device=device)
    noise_device = generator.device if generator is not None else device
    for g, t in enumerate(timesteps):
        t_rows = torch.full((copies * len(x0),), int(t), dtype=torch.long, device=device)
        for _ in range(draws):
            noise = torch.randn(x0.shape, generator=generator, device=noise_device).to(device).repeat(reps)
            out[:, g] += model.loss(x_rep, y_rep, t_rows, noise, scheduler).float() / draws
    return out.cpu()


def classifier_loss(targets: torch.Tensor) -> Callable[..., torch.Tensor]:
    """Cross-entropy of ``f(x_t, t, y)`` against ``targets[row]`` (e.g. the CPSample bit), (b,)."""

    def loss_fn(model: torch.nn.Module, batch: dict[str, Any], scheduler: DDPMScheduler) -> torch.Tensor:
        x_t = scheduler.add_noise(batch["x0"], batch["noise"], batch["t"])
        logits = model(x_t, batch["t"], batch["labels"])
        return torch.nn.functional.cross_entropy(logits.float(), rows_of(targets, batch, logits.device), reduction="none")

    return loss_fn


def rows_of(values: torch.Tensor, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    """``values[batch rows]`` on ``device`` (per-row targets of a loss that live beside the data set)."""
    return values[batch["rows"]].to(device, non_blocking=True)


def new_state(model: torch.nn.Module, config: TrainConfig) -> TrainState:
    """Model, EMA copy, AdamW and generator, all on the config's device (weights fp32)."""
    device = resolve_device(config.device)
    model = model.to(device=device, dtype=torch.float32)
    generator = seeded(config.seed, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return TrainState(model=model, ema=EMA(model, config.ema_decay), optimizer=optimizer, generator=generator,
                      seed=config.seed)


def steps_for(n: int, config: TrainConfig, epochs: float | None = None) -> int:
    """Optimizer steps for ``epochs`` passes over ``n`` samples (each step: batch_size · grad_accum samples)."""
    return max(1, math.ceil((config.epochs if epochs is None else epochs) * n / (config.batch_size * config.grad_accum)))


class _Rows(torch.utils.data.Dataset):
    """A batch at a time: ``dataset[rows] = (uint8 pixels, labels, rows)`` for an index tensor."""

    def __init__(self, data: SampleSet):
        self.pixels, self.labels = data.pixels, data.labels

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.pixels[rows], self.labels[rows], rows


class EpochBatches(torch.utils.data.Sampler):
    """Endless shuffled epochs split into batches; each epoch's permutation drawn, when it starts, from ``generator``."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        self.n, self.batch_size, self.generator = n, batch_size, generator

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            order = torch.randperm(self.n, generator=self.generator, device=self.generator.device)
            yield from order.cpu().split(self.batch_size)


def batch_loader(data: SampleSet | ChunkedSamples, config: TrainConfig, generator: torch.Generator, device: torch.device):
    """The training ``DataLoader``: whole batches gathered by index, pinned for CUDA, optional workers.

    A ``SampleSet`` (in memory) is shuffled uniformly; ``ChunkedSamples`` (streamed from chunk
    files) by ``ChunkBatches``: chunks in a random order, rows shuffled across a window of chunks.
    """
    if isinstance(data, ChunkedSamples):
        dataset, sampler = data, ChunkBatches(data.chunk, config.batch_size, generator)
    else:
        dataset, sampler = _Rows(data), EpochBatches(len(data), config.batch_size, generator)
    return torch.utils.data.DataLoader(
        dataset, sampler=sampler, batch_size=None,
        num_workers=config.num_workers, pin_memory=device.type == "cuda", persistent_workers=False,
    )


def replay_batches(data: SampleSet | ChunkedSamples, replay: SampleSet | ChunkedSamples, config: TrainConfig,
                   generator: torch.Generator, device: torch.device) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless batches of ``batch_size`` rows, ``round(replay · batch_size)`` of them (at least one, at most all
    but one) from ``replay``, the rest from ``data``: two loaders, each with its own shuffle, concatenated.

    Replayed rows are numbered after ``data``'s (``len(data) + i``), so the batch's ``rows`` index one id list.
    Each loader's last batch of an epoch may be short, as in a run without replay.
    The replay loader shuffles with a generator of its own, seeded from the run's seed (deterministic, and
    independent of how many draws the run's generator has made).
    """
    n_replay = min(config.batch_size - 1, max(1, round(config.replay * config.batch_size)))
    own = batch_loader(data, replace(config, batch_size=config.batch_size - n_replay), generator, device)
    base_gen = seeded(config.seed + REPLAY_SEED_OFFSET, generator.device)
    other = batch_loader(replay, replace(config, batch_size=n_replay), base_gen, device)
    for (p_own, y_own, r_own), (p_rep, y_rep, r_rep) in zip(own, other):
        yield torch.cat([p_own, p_rep]), torch.cat([y_own, y_rep]), torch.cat([r_own, r_rep + len(data)])


def train(
    state: TrainState,
    data: SampleSet | ChunkedSamples,
    config: TrainConfig,
    *,
    steps: int | None = None,
    hooks: Sequence[Any] = (),
    loss_fn: Callable[..., torch.Tensor] = denoising_loss,
    progress: bool | str = True,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    checkpoint_every: int = 0,
    replay: SampleSet | ChunkedSamples | None = None,
    name: str | None = None,
) -> TrainState:
    """Train ``state.model`` on ``data`` for ``steps`` optimizer steps (default: ``config.epochs`` epochs).

    ``data`` in memory (``SampleSet``) or streamed from a store's chunks (``ChunkedSamples``,
    e.g. ``Store.training_set``): the loop is the same, only the batch order differs.
    ``replay``: a base's samples, a ``config.replay`` share of every batch (``replay_batches``); the steps
    are counted on ``data`` alone, and hooks see a replayed row's id like any other.
    ``name``: the run's folder under ``config.log_dir`` (default: the progress label, else "train")."""
    config.check()
    if len(data) == 0:
        raise SilodiffError("cannot train on an empty set of samples")
    model, opt, gen = state.model.train(), state.optimizer, state.generator
    device = device_of(model)
    if gen.device.type != device.type:
        raise SilodiffError(f"the run's generator is on {gen.device} but the model on {device}: build the state with new_state")
    if config.compile and getattr(model, "_compiled_call_impl", None) is None:
        model.compile()
    scheduler = noise_scheduler(config.num_train_timesteps)
    null = getattr(model, "num_classes", 0)  # index of the "no label" class
    steps = steps_for(len(data), config) if steps is None else steps
    rank, size = world()  # data-parallel: every rank draws the whole batch and keeps its share (training.parallel)
    curves = None
    if config.log_dir is not None and rank == 0:  # TensorBoard scalars (training.curves): a hook that only reads
        from .curves import TensorBoardCurves

        curves = TensorBoardCurves(config.log_dir, name or (progress if isinstance(progress, str) else "train"), hooks)
        hooks = [*hooks, curves]
    on_batch = [h.on_batch for h in hooks if hasattr(h, "on_batch")]
    if config.replay and not (replay is not None and len(replay)):
        raise SilodiffError("replay > 0 needs the base's samples to replay (a compartment trained from a base)")
    replay = replay if config.replay else None
    ids = None
    if on_batch:  # batch hooks see the batch's ids (a streamed set decodes them once); replayed rows come after data's
        ids = data.sample_ids if replay is None else list(data.sample_ids) + list(replay.sample_ids)
    on_step = [h.on_step for h in hooks if hasattr(h, "on_step")]
    scaler = grad_scaler(device, config.precision)
    bar = tqdm(total=steps, desc=progress if isinstance(progress, str) else "train", disable=not progress, leave=False)
    batches = replay_batches(data, replay, config, gen, device) if replay is not None else iter(
        batch_loader(data, config, gen, device))
    trainable = [p for p in model.parameters() if p.requires_grad]  # clipping walks these only (a LoRA: the adapter)
    done, state.stop = 0, False
    while done < steps and not state.stop:
        opt.zero_grad(set_to_none=True)
        kept = False  # did any micro-batch keep a sample (on any rank)?
        for _ in range(config.grad_accum):
            # 1. batch (to the device), label dropout, timesteps, noise and flips, all from the run's generator
            pixels, y, rows = next(batches)
            x0 = pixels.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)  # uint8 → [-1, 1]
            y = y.to(device, non_blocking=True)
            b = len(rows)
            if config.label_dropout and null:
                y = torch.where(torch.rand(b, generator=gen, device=device) < config.label_dropout, null, y)
            t = torch.randint(0, config.max_timestep or config.num_train_timesteps, (b,), generator=gen, device=device)
            noise = torch.randn(x0.shape, generator=gen, device=device)
            if config.hflip:
                flip = torch.rand(b, generator=gen, device=device) < 0.5
                x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
            if size > 1:
                part = shard(b, rank, size)
                x0, y, t, noise, rows = x0[part], y[part], t[part], noise[part], rows[part]
            # 2. per-sample losses, (b,), the forward pass in the run's precision
            batch = {"x0": x0, "labels": y, "rows": rows, "t": t, "noise": noise}
            with autocast(device, config.precision):
                loss = loss_fn(model, batch, scheduler)
            loss = batch["loss"] = loss.float()
            # 3. hooks may drop samples
            keep = None
            if on_batch:
                batch["ids"] = [ids[i] for i in rows.tolist()]
                for hook in on_batch:
                    mask = hook(batch)
                    if mask is not None:
                        keep = mask if keep is None else keep & mask
            # 4. reduce and accumulate gradients (data-parallel: this rank's share of the global mean)
            if size > 1:  # every rank drew the whole batch of b rows; kept rows are counted across ranks
                count = all_sum(keep.sum().float()) if keep is not None else torch.tensor(float(b), device=device)
                total = (loss if keep is None else loss * keep).sum() / count.clamp(min=1)
                kept = kept or bool(count > 0)
            elif keep is None:
                total, kept = loss.mean(), True
            else:
                total, kept = (loss * keep).sum() / keep.sum().clamp(min=1), kept or bool(keep.any())
            part = total / config.grad_accum
            (scaler.scale(part) if scaler is not None else part).backward()
        # 5. (sum the ranks' gradients,) clip, step, EMA
        if size > 1:
            all_reduce_grads(model)
        if scaler is not None:
            scaler.unscale_(opt)
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip, foreach=True)
        if kept:  # every sample dropped (AGC): no step, or AdamW momentum moves the weights
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
        state.step += 1
        state.ema.update(model, state.step)
        for hook in on_step:
            hook(state)  # may set state.stop (early stopping): this step is the run's last
        done += 1
        bar.update(1)
        if done % 50 == 0:
            bar.set_postfix(loss=f"{total.item():.4f}", refresh=False)
        if checkpoint_every and on_checkpoint and done % checkpoint_every == 0 and done < steps:
            on_checkpoint(state)
    bar.close()
    if curves is not None:
        curves.close()
    model.eval()
    return state
