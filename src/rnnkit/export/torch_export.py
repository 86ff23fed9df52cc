"""``torch.export`` of rnnkit layers and task models, saved and loaded without pickle.

    from rnnkit.export import to_torch_export, load_torch_export
    to_torch_export(rnnkit.GRU(32, 64, num_layers=2), (x,), "gru.pt2")  # T and B dynamic
    to_torch_export(classifier, (ids, lengths), "clf.pt2", dynamic=("BT", "B"))
    program = load_torch_export("gru.pt2")
    output, h_n = program.module()(x_of_any_T_and_B)

``dynamic`` names the axes of each example argument, one character per axis: an
upper-case letter is a dynamic size (the same letter in two arguments is the same size,
e.g. the batch of the ids and of the lengths), ``.`` a fixed one; ``None`` fixes every
axis of that argument. For an rnnkit layer the default follows its layout: input
``"TB."`` (``"BT."`` with ``batch_first``), ``hx`` ``".B."``, ``lengths`` ``"B"``.

The module is exported as it serves: in evaluation mode (no dropout) and without
autograd, so the fused kernel runs its inference path (no saved buffers). Each layer call
is one ``rnnkit::fused_layer`` custom operator (``rnnkit.nn.kernels.ops``), so a saved
program needs rnnkit installed to run; ``load_torch_export`` registers the operators
first. For a program that runs without rnnkit, export to ONNX.

``torch.export.load`` falls back to unpickling (``torch.load(weights_only=False)``) for
what an archive marks as pickled; ``load_torch_export`` refuses such an archive before
it is read, so a ``.pt2`` file loads as plain tensors and JSON or not at all.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.export import Dim, ExportedProgram
from torch.export.pt2_archive import constants as archive

import rnnkit.nn.kernels.ops  # noqa: F401  (registers the rnnkit:: operators)
from rnnkit.common.io import atomic_write_bytes, check_new_file
from rnnkit.nn.layers import RNNBase

Axes = str | None
"""One character per axis: an upper-case letter names a dynamic size, ``.`` a fixed one."""


def to_torch_export(
    module: nn.Module,
    example_args: tuple,
    path: str | os.PathLike[str] | None = None,
    *,
    example_kwargs: Mapping[str, Any] | None = None,
    dynamic: Sequence[Axes] | Mapping[str, Axes] | None = None,
    force: bool = False,
) -> ExportedProgram:
    """Export ``module(*example_args, **example_kwargs)`` with ``torch.export`` (evaluation
    mode, no autograd), the axes ``dynamic`` names left symbolic, and save it to ``path``
    (atomic; an existing file only with ``force``). ``dynamic``: one ``Axes`` per
    positional argument (a sequence), or per argument name (a mapping, keyword arguments
    included); None: the layer default (see the module docstring), else every axis fixed.
    Returns the program."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(example_args, tuple):
        raise TypeError(f"example_args must be a tuple, got {type(example_args).__name__}")
    kwargs = dict(example_kwargs or {})
    if path is not None:
        path = check_new_file(path, "path", force)
    given = _arguments(module, example_args, kwargs)
    named = _named_axes(module, given, len(example_args), dynamic)
    dims: dict[str, Any] = {}
    shapes = {name: _arg_shapes(name, v, named.get(name), dims) for name, v in given.items()}
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            program = torch.export.export(module, example_args, kwargs, dynamic_shapes=shapes)
    finally:
        module.train(was_training)
    if path is not None:
        buffer = io.BytesIO()  # (torch names a file that does not end in .pt2 in a warning)
        torch.export.save(program, buffer)
        atomic_write_bytes(path, buffer.getvalue())
    return program


def load_torch_export(path: str | os.PathLike[str]) -> ExportedProgram:
    """A program ``to_torch_export`` (or ``torch.export.save``) wrote, with rnnkit's
    operators registered; an archive that would need unpickling is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported program at {str(path)!r}")
    check_plain_archive(path)
    return torch.export.load(path)


def check_plain_archive(path: Path) -> None:
    """Refuse a ``.pt2`` archive whose loading would unpickle: weights or constants
    marked as pickled or stored as objects, legacy pickled weight files, or sample
    inputs that ``torch.load(weights_only=True)`` does not read."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            configs = [n for n in names if _under(n, archive.WEIGHTS_DIR, ".json")]
            configs += [n for n in names if _under(n, archive.CONSTANTS_DIR, ".json")]
            legacy = [n for n in names if _under(n, archive.WEIGHTS_DIR, ".pt")]
            legacy += [n for n in names if _under(n, archive.CONSTANTS_DIR, ".pt")]
            if legacy:
                _refuse(path, f"{legacy[0]} is a pickled (legacy) payload")
            plain = (archive.WEIGHT_FILENAME_PREFIX, archive.TENSOR_CONSTANT_FILENAME_PREFIX)
            for name in configs:
                for fqn, meta in json.loads(zf.read(name)).get("config", {}).items():
                    if meta.get("use_pickle") or not str(meta.get("path_name")).startswith(plain):
                        _refuse(path, f"{fqn!r} in {name} is stored as a pickle")
            for name in (n for n in names if _under(n, archive.SAMPLE_INPUTS_DIR, ".pt")):
                try:
                    torch.load(io.BytesIO(zf.read(name)), weights_only=True)
                except Exception:
                    _refuse(path, f"its sample inputs {name} need more than plain tensors")
    except zipfile.BadZipFile:
        raise ValueError(
            f"{str(path)!r} is not a torch.export archive (.pt2, a zip file)"
        ) from None


def _under(name: str, folder: str, suffix: str) -> bool:
    """Whether an archive member lies in ``folder`` (archives prefix a top folder)."""
    return f"/{folder}" in f"/{name}" and name.endswith(suffix)


def _refuse(path: Path, reason: str) -> None:
    raise ValueError(f"refusing to load {str(path)!r}: {reason}, and rnnkit never unpickles")


def _arguments(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The example's arguments by the names ``module.forward`` gives them."""
    names = list(inspect.signature(module.forward).parameters)
    if len(args) > len(names):
        raise ValueError(f"{len(args)} example arguments for forward({', '.join(names)})")
    return dict(zip(names, args, strict=False)) | kwargs


def _named_axes(
    module: nn.Module,
    given: dict[str, Any],
    n_positional: int,
    dynamic: Sequence[Axes] | Mapping[str, Axes] | None,
) -> dict[str, Axes]:
    """The ``Axes`` of each argument, by name."""
    if dynamic is None:
        if not isinstance(module, RNNBase):
            return {}
        time_batch = "BT." if module.batch_first else "TB."
        return {"input": time_batch, "hx": ".B.", "lengths": "B"}
    if isinstance(dynamic, Mapping):
        unknown = sorted(set(dynamic) - set(given))
        if unknown:
            raise ValueError(
                f"dynamic names {unknown}, which are not among the example's arguments "
                f"{sorted(given)}"
            )
        return dict(dynamic)
    if isinstance(dynamic, str) or len(dynamic) != n_positional:
        raise ValueError(
            f"dynamic must hold one axes string (or None) per positional argument "
            f"({n_positional}), got {dynamic!r}"
        )
    return dict(zip(given, dynamic, strict=False))


def _arg_shapes(name: str, value: Any, axes: Axes, dims: dict[str, Any]) -> Any:
    """The dynamic-shapes entry of one argument (a tensor, or a tuple of them: the LSTM's
    state, whose parts share the axes)."""
    if isinstance(value, tuple | list):
        return type(value)(_arg_shapes(name, v, axes, dims) for v in value)
    if not isinstance(value, Tensor) or axes is None:
        return None
    if len(axes) != value.dim() or any(c != "." and not c.isupper() for c in axes):
        raise ValueError(
            f"dynamic axes {axes!r} for {name} must have one character per axis of its "
            f"shape {tuple(value.shape)}: an upper-case letter (dynamic) or '.' (fixed)"
        )
    spec = {}
    for axis, letter in enumerate(axes):
        if letter == ".":
            continue
        if value.shape[axis] < 2:
            raise ValueError(
                f"the example {name} has size {value.shape[axis]} on its dynamic axis "
                f"{letter}; torch.export fixes sizes 0 and 1, so give it at least 2"
            )
        spec[axis] = dims.setdefault(letter, Dim(letter, min=1))
    return spec
