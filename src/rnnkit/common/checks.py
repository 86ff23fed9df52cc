"""Argument checks shared by the modules: fail at the boundary, name the value."""

from __future__ import annotations

import torch
from torch import Tensor


class MissingExtra(ModuleNotFoundError):
    """An optional package a feature needs is not installed; the message names the
    extra that installs it (the CLI prints it as one line)."""

    def __init__(self, package: str, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the {package} package, which is not installed: "
            f"pip install 'rnnkit[{extra}]' (or pip install {package})",
            name=package,
        )


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def dropout_probability(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"dropout must be a number in [0, 1), got {value!r}")
    return float(value)


def probability(name: str, value: object) -> float:
    """A rate in [0, 1) (a dropout-like probability), as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def floating(name: str, value: Tensor) -> Tensor:
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    return value


def state_like(name: str, value: object, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Check a state tensor's type, shape, dtype and device against the input ``like``."""
    value = tensor(name, value)
    if tuple(value.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
    if value.dtype != like.dtype:
        raise TypeError(f"{name} has dtype {value.dtype} but the input has {like.dtype}")
    if value.device != like.device:
        raise ValueError(f"{name} is on {value.device} but the input is on {like.device}")
    return value


def lengths_for(value: object, T: int, B: int, device: torch.device) -> Tensor:
    """Sequence lengths as an int64 tensor on ``device``; each in [0, T]."""
    lengths = torch.as_tensor(value)
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.dim() != 1:
        raise ValueError(
            f"lengths must be a 1-D sequence of integers, got dtype {lengths.dtype} "
            f"and shape {tuple(lengths.shape)}"
        )
    if lengths.shape[0] != B:
        raise ValueError(f"lengths has {lengths.shape[0]} entries but the batch has {B}")
    if torch.compiler.is_compiling():  # traced: the values are known at run time only
        inside = ((lengths >= 0) & (lengths <= T)).all()
        torch._assert_async(inside, "lengths must lie in [0, T], T the input's time steps")
    elif B and (int(lengths.min()) < 0 or int(lengths.max()) > T):
        raise ValueError(
            f"lengths must lie in [0, {T}] (the input has {T} time steps), "
            f"got min {int(lengths.min())} and max {int(lengths.max())}"
        )
    return lengths.to(device=device, dtype=torch.int64)
