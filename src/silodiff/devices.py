"""Where tensors live and in what precision they are computed.

``resolve_device(spec)`` turns ``auto | cpu | cuda | cuda:N | mps`` (or a
``torch.device``) into a ``torch.device``; ``auto`` picks CUDA, then MPS, then
the CPU.  A device that is not there is a ``SilodiffError`` (one line), never
a CUDA traceback.  Inside a Ray task that was given GPUs, ``auto`` and
``cuda`` mean the first GPU Ray assigned (Ray sets ``CUDA_VISIBLE_DEVICES``,
so that GPU is ``cuda:0`` in the task's process).

Randomness: ``seeded(seed, device)`` is a generator *on* the device, so noise,
timesteps and permutations are drawn where they are used.  Streams are
reproducible per device; CPU, CUDA and MPS generators are different algorithms
(CPU: Mersenne Twister; CUDA/MPS: Philox), so the same seed gives different
numbers on different device types, and GPU kernels may differ in the last bits
(non-associative reductions).  Bit-identical results are promised only on the
same device type, build and batch shapes.

Precision: ``autocast(device, precision)`` with ``fp32`` (no autocast),
``bf16`` or ``fp16`` (``torch.autocast``).  Only the forward pass is cast; the
master weights, the EMA copy and the optimizer state stay fp32, and fp16 uses a
gradient scaler (``grad_scaler``) so small gradients do not underflow.
"""

from __future__ import annotations

import contextlib
import os
import sys

import torch

from .errors import SilodiffError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` → ``torch.device``."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = (spec or "auto").strip().lower()
    if spec in ("auto", "cuda") and "ray" in sys.modules and torch.cuda.is_available() \
            and (assigned := ray_gpu_device()) is not None:
        return torch.device(assigned)  # a Ray task with GPUs trains on the one Ray gave it
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        return torch.device("mps") if mps_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not mps_available():
            raise SilodiffError("device 'mps' was asked for, but this machine has no MPS (Apple GPU) backend")
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        index = 0
        if spec != "cuda":
            try:
                index = int(spec.split(":", 1)[1])
            except ValueError:
                raise SilodiffError(f"bad device {spec!r}: use {', '.join(DEVICES)}") from None
        if not torch.cuda.is_available():
            raise SilodiffError(f"device {spec!r} was asked for, but no CUDA GPU is available "
                                f"(torch {torch.__version__}{'' if torch.version.cuda else ', a CPU-only build'})")
        count = torch.cuda.device_count()
        if not 0 <= index < count:
            raise SilodiffError(f"device {spec!r} does not exist: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
        return torch.device("cuda", index)
    raise SilodiffError(f"unknown device {spec!r}: use {', '.join(DEVICES)}")


def check_precision(precision: str, device: torch.device | None = None) -> str:
    if precision not in PRECISIONS:
        raise SilodiffError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
    if device is not None and device.type == "mps" and precision == "bf16" and not _mps_bf16():
        raise SilodiffError("bf16 is not supported on this MPS device: use fp16 or fp32")
    return precision


def _mps_bf16() -> bool:
    try:
        torch.zeros(1, device="mps", dtype=torch.bfloat16)
        return True
    except (RuntimeError, TypeError):
        return False


def autocast(device: torch.device, precision: str = "fp32"):
    """The forward-pass context for a precision: a no-op for fp32, ``torch.autocast`` otherwise."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[check_precision(precision, device)])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 (bf16 has fp32's exponent range and needs none)."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def seeded(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))


def device_of(module: torch.nn.Module | None, default: torch.device | str = "cpu") -> torch.device:
    """The device a module's parameters live on (``default`` for a module without any)."""
    if isinstance(module, torch.nn.Module):
        for p in module.parameters():
            return p.device
        for b in module.buffers():
            return b.device
    dev = getattr(module, "device", None)
    return dev if isinstance(dev, torch.device) else torch.device(default)


def ray_gpu_device() -> str | None:
    """Inside a Ray task given GPUs: the device of the first one (``cuda:0`` after Ray's
    ``CUDA_VISIBLE_DEVICES``); ``None`` outside Ray or without GPUs."""
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized():
        return None
    try:
        gpus = ray.get_gpu_ids()
    except Exception:  # noqa: BLE001 - not inside a worker (the driver) or an old Ray
        return None
    if not gpus:
        return None
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    ids = [str(g) for g in gpus]
    # Ray restricts CUDA_VISIBLE_DEVICES to the task's GPUs, so its first GPU is index 0 here
    index = visible.index(ids[0]) if visible and ids[0] in visible else 0
    return f"cuda:{index}"


def describe(device: torch.device) -> str:
    """A human name for a device (the GPU model for CUDA)."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
