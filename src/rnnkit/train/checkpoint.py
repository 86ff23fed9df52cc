"""Checkpoints: a directory of safetensors and JSON, written atomically, loaded without pickle.

    model.safetensors     the model's weights (tied weights stored once)
    config.json           the resolved config of every component, plus "kind" and version
    tokenizer.json        the tokenizer (any further JSON files the task passes in ``extra``)
    state.safetensors     optimiser tensors, RNG states, the carried TBPTT state
    state.json            step, epoch, position in the epoch, schedule, optimiser scalars
    checksums.json        the SHA-256 of each .safetensors file, verified on every load

Nothing here is unpickled: tensors come from safetensors and everything else from JSON,
so a checkpoint from elsewhere cannot run code when loaded.

Atomicity: a checkpoint is written with ``rnnkit.common.io.atomic_dir`` (a fresh sibling
directory, each file and the directory fsynced, then swapped in), so a crash at any moment
leaves either the old or the new checkpoint complete; ``resolve`` falls back to
``<name>.previous`` in the one window of the swap where only the old one exists.

Loading trusts nothing in the directory. Each safetensors header is read and checked
(size, dtypes, offsets that tile the file) and each file's checksum verified before any
tensor is read; ``build_model`` builds the model first on the ``meta`` device (no memory)
and compares every stored tensor's name, shape and dtype with what config.json asks for,
so a hostile config costs nothing before it is refused; weights holding NaN or inf are
refused. A damaged ``best/`` falls back to ``last/`` (``load_run``), with a notice. Every
failure is a ``CheckpointError`` naming the file and what is wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from rnnkit.common.config import ConfigError
from rnnkit.common.io import atomic_dir, previous_of
from rnnkit.common.notices import notify
from rnnkit.train.run_folder import LOCK_FILE

MODEL_FILE = "model.safetensors"
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
CONFIG_FILE = "config.json"
CHECKSUMS_FILE = "checksums.json"

MAX_JSON_BYTES = 512 << 20
"""A checkpoint's JSON file is read whole: larger ones are refused, not read."""
MAX_HEADER_BYTES = 100 << 20
"""safetensors' own limit on a header."""

# safetensors dtype -> (torch dtype, bytes per element)
_DTYPES = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}
_NAMES = {dtype: name for name, (dtype, _) in _DTYPES.items()}
T = TypeVar("T")


class CheckpointError(ValueError):
    """A path that is not a readable rnnkit checkpoint."""


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def write_atomic(target: str | Path, files: Mapping[str, Any]) -> Path:
    """Write a checkpoint directory: ``files`` maps a file name to a dict of tensors
    (``.safetensors``) or JSON data (``.json``). Returns the target path."""
    for name in files:
        if not name.endswith((".safetensors", ".json")):
            raise ValueError(f"checkpoint file {name!r} must end in .safetensors or .json")
    target = Path(target)
    with atomic_dir(target) as tmp:  # the directory is the unit: no per-file temporaries
        write_files(tmp, files)
    return target


def write_files(directory: Path, files: Mapping[str, Any]) -> None:
    """``write_atomic``'s files and checksums.json, into a fresh directory (the one
    ``atomic_dir`` yields)."""
    for name, content in files.items():
        path = directory / name
        if name.endswith(".safetensors"):
            save_file({k: v.detach().contiguous().cpu() for k, v in content.items()}, path)
        else:
            _write_json(path, content)
    sums = {name: _sha256(directory / name) for name in files if name.endswith(".safetensors")}
    _write_json(directory / CHECKSUMS_FILE, {"sha256": sums})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def resolve(path: str | Path, prefer: tuple[str, ...] = ("best", "last")) -> Path:
    """The checkpoint directory for a checkpoint path or a run directory (its ``best``,
    else its ``last``; ``prefer`` changes the order)."""
    path = Path(path)
    for candidate in (path, *(path / name for name in prefer)):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
        previous = previous_of(candidate)
        if not candidate.exists() and (previous / CONFIG_FILE).is_file():
            return previous  # a crash between the two renames of atomic_dir
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if (path / LOCK_FILE).is_file():
        raise CheckpointError(
            f"the run in {str(path)!r} stopped before its first checkpoint: nothing to resume "
            "or load; start it again (a new run with this --trainer.out takes the folder over)"
        )
    raise CheckpointError(
        f"{str(path)!r} is not an rnnkit checkpoint (no {CONFIG_FILE}) nor a run directory "
        "with a best/ or last/ checkpoint"
    )


def _damaged(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{str(path)!r} is damaged: {why}")


def read_json(checkpoint: Path, name: str) -> dict[str, Any]:
    """A JSON object from the checkpoint, size-bounded."""
    path = checkpoint / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(checkpoint)!r} lacks {name}")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise _damaged(
            path, f"{size:,} bytes, more than the {MAX_JSON_BYTES:,} a checkpoint's JSON may hold"
        )
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _damaged(path, f"not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise _damaged(path, f"it holds a JSON {type(data).__name__}, not an object")
    return data


def read_part(checkpoint: Path, name: str, parse: Callable[[Any], T]) -> T:
    """``parse`` of a JSON file of the checkpoint (a tokenizer, labels, a scaler): what
    ``parse`` refuses is one ``CheckpointError`` naming the file."""
    data = read_json(checkpoint, name)
    try:
        return parse(data)
    except KeyError as error:
        raise _damaged(checkpoint / name, f"it lacks the entry {error.args[0]!r}") from None
    except (ValueError, TypeError, AttributeError) as error:
        raise _damaged(checkpoint / name, " ".join(str(error).split()) or repr(error)) from None


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    dtype: str
    """safetensors' name: F32, BF16, I64, ..."""
    shape: tuple[int, ...]


def read_header(path: Path) -> dict[str, TensorInfo]:
    """The tensors a safetensors file holds, from its header, checked to describe the
    file exactly (known dtypes, sizes that match the shapes, offsets that tile the data)."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path.parent)!r} lacks {path.name}")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _damaged(path, f"{size} bytes, too short for a safetensors header")
        n = int.from_bytes(head, "little")
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise _damaged(path, f"its header claims {n:,} bytes but the file has {size:,}")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _damaged(path, "its safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise _damaged(path, "its safetensors header is not a JSON object")
    infos, spans = {}, []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        ok = (
            isinstance(entry, dict)
            and entry.get("dtype") in _DTYPES
            and isinstance(entry.get("shape"), list)
            and all(type(d) is int and d >= 0 for d in entry["shape"])
            and isinstance(entry.get("data_offsets"), list)
            and len(entry["data_offsets"]) == 2
            and all(type(o) is int for o in entry["data_offsets"])
        )
        if not ok:
            raise _damaged(path, f"the header's entry for {name!r} is malformed")
        begin, end = entry["data_offsets"]
        if end - begin != math.prod(entry["shape"]) * _DTYPES[entry["dtype"]][1]:
            raise _damaged(path, f"{name!r}'s byte range does not match its shape and dtype")
        spans.append((begin, end))
        infos[name] = TensorInfo(entry["dtype"], tuple(entry["shape"]))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise _damaged(path, "its tensors' byte ranges overlap or leave gaps")
        position = end
    if position != size - 8 - n:
        raise _damaged(
            path,
            f"its header describes {position:,} bytes of tensor data but the file holds "
            f"{size - 8 - n:,} (truncated, or bytes added)",
        )
    return infos


_unverified: set[Path] = set()


def verify(checkpoint: Path, name: str) -> None:
    """Check ``name``'s SHA-256 against the checkpoint's checksums.json; a checkpoint
    written before checksums existed loads with a notice."""
    path = checkpoint / name
    if not (checkpoint / CHECKSUMS_FILE).is_file():
        if checkpoint.resolve() not in _unverified:
            _unverified.add(checkpoint.resolve())
            notify(
                f"{checkpoint} has no {CHECKSUMS_FILE} (written by an older rnnkit): its "
                "weights load unverified"
            )
        return
    expected = read_json(checkpoint, CHECKSUMS_FILE).get("sha256", {})
    if not isinstance(expected, dict) or not isinstance(expected.get(name), str):
        raise _damaged(checkpoint / CHECKSUMS_FILE, f"it has no SHA-256 for {name}")
    if _sha256(path) != expected[name]:
        raise _damaged(
            path, f"its SHA-256 differs from the one in {CHECKSUMS_FILE} (changed since written)"
        )


def read_tensors(checkpoint: Path, name: str, verified: bool = False) -> dict[str, Tensor]:
    """Every tensor of a safetensors file of the checkpoint, after the header and
    checksum checks (``verified``: the checksum was checked already)."""
    path = checkpoint / name
    read_header(path)
    if not verified:
        verify(checkpoint, name)
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise _damaged(path, " ".join(str(error).split())) from None


def stored_names(model: nn.Module) -> list[str]:
    """The state_dict's names with tied (shared) tensors once, under their first name."""
    seen: set[int] = set()
    names = []
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            names.append(name)
    return names


def check_fits(checkpoint: Path, build: Callable[[], nn.Module], config: Any = None) -> None:
    """Check, without allocating the model, that the model ``build`` makes (from the
    checkpoint's config) matches model.safetensors name for name, shape for shape and
    dtype for dtype. ``config``: the model's config dataclass, whose ``*layers`` fields are
    first bounded by the stored tensors' count (so even a build on the meta device is cheap)."""
    path = checkpoint / MODEL_FILE
    header = read_header(path)
    verify(checkpoint, MODEL_FILE)  # first: a changed byte is named as such, not as a misfit
    for field in dataclasses.fields(config) if dataclasses.is_dataclass(config) else ():
        value = getattr(config, field.name)
        if field.name.endswith("layers") and type(value) is int and value > max(1, len(header)):
            raise CheckpointError(
                f"{str(checkpoint / CONFIG_FILE)!r} asks for model.{field.name} {value}, but "
                f"{MODEL_FILE} holds only {len(header)} tensors: the two do not belong together"
            )
    try:
        with torch.device("meta"):
            shaped = build()
    except (RuntimeError, ValueError, OverflowError) as error:
        raise CheckpointError(
            f"{str(checkpoint / CONFIG_FILE)!r} asks for a model that cannot be built "
            f"({' '.join(str(error).split())})"
        ) from None
    state = shaped.state_dict()
    expected = {
        n: TensorInfo(_NAMES.get(state[n].dtype, "?"), tuple(state[n].shape))
        for n in stored_names(shaped)
    }
    missing, unexpected = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{str(path)!r} does not fit {CONFIG_FILE}: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}"
        )
    for name, want in expected.items():
        if header[name] != want:
            raise CheckpointError(
                f"{str(path)!r} does not fit {CONFIG_FILE}: {name} is stored as "
                f"{list(header[name].shape)} {header[name].dtype}, the config builds "
                f"{list(want.shape)} {want.dtype}"
            )


def build_model(checkpoint: Path, build: Callable[[], nn.Module], config: Any = None) -> nn.Module:
    """``build()``'s model with the checkpoint's weights, after ``check_fits``; weights
    holding NaN or inf are refused."""
    check_fits(checkpoint, build, config)
    model = build()
    load_model_tensors(model, read_tensors(checkpoint, MODEL_FILE, verified=True))
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{str(checkpoint / MODEL_FILE)!r} holds NaN or inf in {name}: the run it "
                "comes from diverged"
            )
    return model


def model_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The state_dict with tied (shared) tensors stored once, under their first name."""
    state = model.state_dict()
    return {name: state[name] for name in stored_names(model)}


def load_model_tensors(model: nn.Module, tensors: Mapping[str, Tensor]) -> None:
    """Load ``model_tensors`` output; tied parameters get their shared tensor's values."""
    expected = set(model.state_dict())
    missing = expected - set(tensors)
    shared = {n for n in missing if _is_tied(model, n, tensors)}
    if missing - shared or set(tensors) - expected:
        raise CheckpointError(
            f"the weights do not fit the model: missing {sorted(missing - shared)}, "
            f"unexpected {sorted(set(tensors) - expected)}"
        )
    state = model.state_dict()
    for name, tensor in tensors.items():
        if tensor.shape != state[name].shape:
            raise CheckpointError(
                f"the weights do not fit the model: {name} is {list(tensor.shape)}, the model's "
                f"is {list(state[name].shape)}"
            )
    model.load_state_dict(dict(tensors), strict=False)


def _is_tied(model: nn.Module, name: str, tensors: Mapping[str, Tensor]) -> bool:
    state = model.state_dict()
    target = state[name]
    return any(other in tensors and state[other].data_ptr() == target.data_ptr() for other in state)


# --- optimiser state: tensors to safetensors, everything else to JSON -------------------


def optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_files(
    optimizer: torch.optim.Optimizer, tensors: Mapping[str, Tensor], data: dict
) -> None:
    per_param: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            parts = name.split(".", 2)
            if len(parts) != 3 or not parts[1].isdigit():
                raise ValueError(f"a state tensor is named {name!r}, not optimizer.<index>.<key>")
            per_param.setdefault(int(parts[1]), {})[parts[2]] = value
    for index, values in data["scalars"].items():
        per_param.setdefault(int(index), {}).update(values)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, values in per_param.items():
        if not 0 <= index < len(params):
            raise ValueError(f"optimiser state for parameter {index} of {len(params)}")
        for key, value in values.items():
            if isinstance(value, Tensor) and value.dim() and value.shape != params[index].shape:
                raise ValueError(
                    f"optimizer.{index}.{key} is {list(value.shape)}, its parameter "
                    f"{list(params[index].shape)}"
                )
    groups = []
    for saved, current in zip(data["param_groups"], optimizer.param_groups, strict=True):
        # JSON turns tuples (Adam's betas) into lists; give them back their type.
        groups.append(
            {k: tuple(v) if isinstance(current.get(k), tuple) else v for k, v in saved.items()}
        )
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})


# --- RNG and carried recurrent state ------------------------------------------------


def rng_tensors() -> dict[str, Tensor]:
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = state
    return out


def restore_rng(tensors: Mapping[str, Tensor]) -> None:
    state = tensors.get("rng.torch")
    current = torch.get_rng_state()
    if state is None or state.dtype != current.dtype or state.shape != current.shape:
        raise ValueError(
            f"rng.torch must be a {current.dtype} tensor of shape {list(current.shape)}, got "
            + ("none" if state is None else f"{state.dtype} {list(state.shape)}")
        )
    torch.set_rng_state(state)
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])


def flatten_state(state: Any, prefix: str = "carry") -> dict[str, Tensor]:
    """A carried recurrent state (None, a tensor, or nested tuples of them) as named tensors."""
    if state is None:
        return {}
    if isinstance(state, Tensor):
        return {prefix: state}
    out: dict[str, Tensor] = {}
    for i, part in enumerate(state):
        out |= flatten_state(part, f"{prefix}.{i}")
    return out


def unflatten_state(tensors: Mapping[str, Tensor], prefix: str = "carry") -> Any:
    if prefix in tensors:
        return tensors[prefix]
    parts: list[Any] = []
    while any(
        k == f"{prefix}.{len(parts)}" or k.startswith(f"{prefix}.{len(parts)}.") for k in tensors
    ):
        parts.append(unflatten_state(tensors, f"{prefix}.{len(parts)}"))
    return tuple(parts) if parts else None


def load_run(path: str | Path, which: str, load_one: Callable[[Path], T]) -> T:
    """``load_one(checkpoint)`` for the run's ``which`` ("best" or "last") checkpoint (or
    ``path`` itself when it is a checkpoint). When ``path`` is a run folder and that
    checkpoint is damaged, the other one is loaded instead, with a notice."""
    prefer = ("best", "last") if which == "best" else ("last", "best")
    checkpoint = resolve(path, prefer=prefer)
    try:
        return load_one(checkpoint)
    except (CheckpointError, ConfigError) as error:
        run = Path(path)
        if checkpoint.parent.resolve() != run.resolve():
            raise
        others = [
            c
            for c in (run / name for name in prefer)
            if checkpoint.resolve() not in (c.resolve(), previous_of(c).resolve())
            and (c / CONFIG_FILE).is_file()
        ]
        if not others:
            raise
        try:
            loaded = load_one(others[0])
        except (CheckpointError, ConfigError) as second:
            raise CheckpointError(f"{error}; and {second}") from None
        notify(f"{checkpoint} is damaged ({error}); loaded {others[0]} instead")
        return loaded


def open_checkpoint(checkpoint: Path, task: str, defaults: T) -> tuple[dict[str, Any], T]:
    """(config.json data, the config sections filled in over ``defaults``) of a ``task``
    checkpoint."""
    from rnnkit.common import config as cfg

    saved = read_json(checkpoint, CONFIG_FILE)
    meta = saved.get("meta")
    found = meta.get("task") if isinstance(meta, dict) else None
    if found != task:
        raise CheckpointError(f"{checkpoint} holds a {found!r} model, not a {task!r} one")
    return saved, cfg.from_dict(defaults, saved, str(checkpoint / CONFIG_FILE))


def open_run(
    path: str | Path, task: str, defaults: T, which: str = "best"
) -> tuple[Path, dict[str, Any], T]:
    """(checkpoint directory, its config.json data, the config sections filled in over
    ``defaults``) of a ``task`` run or checkpoint; ``which`` prefers best or last."""

    def one(checkpoint: Path) -> tuple[Path, dict[str, Any], T]:
        return (checkpoint, *open_checkpoint(checkpoint, task, defaults))

    return load_run(path, which, one)
