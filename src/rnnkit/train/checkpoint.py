"""Checkpoints: a directory of safetensors and JSON, written atomically, loaded without pickle.

    model.safetensors     the model's weights (tied weights stored once)
    config.json           the resolved config of every component, plus "kind" and version
    tokenizer.json        the tokenizer (any further JSON files the task passes in ``extra``)
    state.safetensors     optimiser tensors, RNG states, the carried TBPTT state
    state.json            step, epoch, position in the epoch, schedule, optimiser scalars

Nothing here is unpickled: tensors come from safetensors and everything else from JSON,
so a checkpoint from elsewhere cannot run code when loaded.

Atomicity: a checkpoint is written with ``rnnkit.common.io.atomic_dir`` (a fresh sibling
directory, each file and the directory fsynced, then swapped in), so a crash at any moment
leaves either the old or the new checkpoint complete; ``resolve`` falls back to
``<name>.previous`` in the one window of the swap where only the old one exists.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from rnnkit.common.io import atomic_dir, previous_of

MODEL_FILE = "model.safetensors"
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
CONFIG_FILE = "config.json"


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
        for name, content in files.items():
            path = tmp / name
            if name.endswith(".safetensors"):
                save_file({k: v.detach().contiguous().cpu() for k, v in content.items()}, path)
            else:
                _write_json(path, content)
    return target


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
    raise CheckpointError(
        f"{str(path)!r} is not an rnnkit checkpoint (no {CONFIG_FILE}) nor a run directory "
        "with a best/ or last/ checkpoint"
    )


def read_json(checkpoint: Path, name: str) -> Any:
    path = checkpoint / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(checkpoint)!r} lacks {name}")
    return json.loads(path.read_text(encoding="utf-8"))


def read_tensors(checkpoint: Path, name: str) -> dict[str, Tensor]:
    path = checkpoint / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(checkpoint)!r} lacks {name}")
    return load_file(path)


def model_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The state_dict with tied (shared) tensors stored once, under their first name."""
    seen: set[tuple[int, tuple[int, ...]]] = set()
    out = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        out[name] = tensor
    return out


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
            _, index, key = name.split(".", 2)
            per_param.setdefault(int(index), {})[key] = value
    for index, values in data["scalars"].items():
        per_param.setdefault(int(index), {}).update(values)
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
    torch.set_rng_state(tensors["rng.torch"])
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


def fresh_run_dir(out: str | Path) -> Path:
    """``out``, or ``out-2``, ``out-3``, ... if it already holds a run: a new run never
    writes over an earlier one."""
    path, n = Path(out), 1
    while (path / "metrics.jsonl").exists() or (path / "last").exists():
        n += 1
        path = Path(f"{out}-{n}")
    return path


def open_run(
    path: str | Path, task: str, defaults: Any, which: str = "best"
) -> tuple[Path, dict[str, Any], Any]:
    """(checkpoint directory, its config.json data, the config sections filled in over
    ``defaults``) of a ``task`` run or checkpoint; ``which`` prefers best or last."""
    from rnnkit.common import config as cfg

    prefer = ("best", "last") if which == "best" else ("last", "best")
    checkpoint = resolve(path, prefer=prefer)
    saved = read_json(checkpoint, CONFIG_FILE)
    if saved.get("meta", {}).get("task") != task:
        found = saved.get("meta", {}).get("task")
        raise CheckpointError(f"{checkpoint} holds a {found!r} model, not a {task!r} one")
    return checkpoint, saved, cfg.from_dict(defaults, saved, str(checkpoint / CONFIG_FILE))
