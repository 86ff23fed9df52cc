"""More than one process: torch.distributed under torchrun.

    torchrun --standalone --nproc_per_node 2 -m rnnkit train lm ...

torchrun describes the job in each process's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``,
``TORCHELASTIC_RUN_ID``, ``TORCHELASTIC_RESTART_COUNT``); ``session`` joins the process
group it names, with the backend the device asks for (gloo on CPU, nccl on CUDA) and, unless
``--trainer.threads`` says otherwise, the machine's cores shared among its local processes.
Without torchrun (``WORLD_SIZE`` unset or 1) every function here is the one-process no-op,
so the trainer and the tasks have one code path.

How a run is split (docs/distributed.md has the story and the commands):

- the global batch is the one-process batch; rank r of W takes its share ``shard(n)`` of
  it: the language model its columns (streams), a padded task its rows of the batch that
  one process would draw (the same epoch-seeded shuffle). Every rank takes the same number
  of steps, so none waits on a collective the others never reach; a share may be empty
  (a last batch smaller than W), and then the rank contributes zero;
- each rank backpropagates its summed loss (mean x count); ``reduce_gradients`` sums the
  gradients and the counts over the ranks in one all-reduce and divides by the global
  count, which is the gradient of the one-process mean. Clipping, the NaN guard, weight
  averaging and the schedule then see the same numbers on every rank;
- a stop that one rank decides (time cap, Ctrl-C) is all-reduced (``any_rank``), and
  validation runs on rank 0 and is broadcast, so every rank leaves the loop together;
- rank 0 claims and locks the run folder (``claim``), and writes checkpoints, metrics and
  progress; the others only compute.

Collectives carry tensors only (JSON as UTF-8 bytes): nothing is pickled.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from rnnkit.train import run_folder

TIMEOUT = datetime.timedelta(hours=1)
"""How long a collective waits for a silent rank: longer than torch's 30 minutes, because
the others wait in one while rank 0 validates alone or writes a checkpoint. A rank that
dies is noticed sooner, by torchrun, which then stops the others."""


@dataclass(frozen=True)
class Runtime:
    """This process's place in the job: rank r of ``world_size`` (one process: 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


_current = Runtime()


def current() -> Runtime:
    return _current


class PeerFailed(RuntimeError):
    """Rank 0 failed at a step all ranks wait on; rank 0 reports the error itself."""


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit():
        raise ValueError(f"the environment variable {name} must be an integer >= 0, got {value!r}")
    return int(value)


def environment() -> Runtime:
    """The job torchrun described in the environment (no process group is joined)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world < 1 or rank >= world:
        raise ValueError(f"RANK {rank} and WORLD_SIZE {world}: need 0 <= RANK < WORLD_SIZE")
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    return Runtime(rank, world, _env_int("LOCAL_RANK", rank), max(1, local_world))


def restart_count() -> int:
    """How many times torchrun restarted the job's workers (``--max-restarts``)."""
    return _env_int("TORCHELASTIC_RESTART_COUNT", 0)


def run_id() -> str | None:
    """torchrun's ``--rdzv-id`` (a fresh UUID with ``--standalone``): what a restarted job
    looks for in its run folders."""
    return os.environ.get("TORCHELASTIC_RUN_ID") or None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"trainer.device is {name!r} but CUDA is not available; use cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"trainer.device must be cpu, cuda, cuda:N or auto, got {name!r}"
        ) from None


@contextlib.contextmanager
def session(device: str, threads: int = 0) -> Iterator[Runtime]:
    """Join the process group torchrun started this process in, for the block; one
    process (no torchrun, or a group already joined by the caller): nothing to join.

    The backend follows ``device``: nccl for CUDA (each process on the GPU of its local
    rank), gloo for the CPU. ``threads`` 0: the cores shared by the local processes."""
    global _current
    job = environment()
    if not job.active or _current.active:
        yield _current
        return
    kind = resolve_device(device).type
    backend = "nccl" if kind == "cuda" else "gloo"
    if kind == "cuda":
        torch.cuda.set_device(job.local_rank)
    if not threads:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // job.local_world_size))
    if not dist.is_initialized():
        # torchrun's store outlives a restart (--max-restarts): the keys of each attempt
        # get their own prefix, or the new processes read the addresses of the dead ones.
        store, rank, world = next(dist.rendezvous("env://", timeout=TIMEOUT))
        store = dist.PrefixStore(f"rnnkit/attempt_{restart_count()}/", store)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=TIMEOUT)
        owned = True
    else:  # joined by the caller, who chose the backend
        owned, backend = False, str(dist.get_backend())
    _current = Runtime(job.rank, job.world_size, job.local_rank, job.local_world_size, backend)
    try:
        yield _current
    finally:
        _current = Runtime()
        if owned:
            dist.destroy_process_group()


def _device() -> torch.device:
    """Where collectives' tensors live: the GPU for nccl, else the CPU."""
    return torch.device("cuda") if _current.backend == "nccl" else torch.device("cpu")


def shard(n: int, rt: Runtime | None = None) -> slice:
    """This rank's share of ``n`` items: contiguous, sizes differing by at most one,
    rank 0 first (so rank order is one-process order)."""
    rt = rt or _current
    return slice(n * rt.rank // rt.world_size, n * (rt.rank + 1) // rt.world_size)


def share(rows: list[int]) -> list[int]:
    """This rank's part of the rows of a global batch (all of them for one process)."""
    return rows[shard(len(rows))]


def share_rows(ids: Tensor, lengths: Tensor, *more: Tensor) -> tuple[Tensor, ...] | None:
    """This rank's rows of a padded batch (ids [B, T], lengths [B], and any further
    per-row tensors), trimmed to its longest row; None when it has none."""
    rows = shard(ids.shape[0])
    if rows.start == rows.stop:
        return None
    if not _current.active:
        return (ids, lengths, *more)
    lengths = lengths[rows]
    return (ids[rows, : int(lengths.max())], lengths, *(t[rows] for t in more))


def main_only(log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` on rank 0, silence on the others."""
    return log if _current.main else (lambda _message: None)


def barrier() -> None:
    if _current.active:
        dist.barrier()


def any_rank(flags: list[bool]) -> list[bool]:
    """Each flag, true when it is true on any rank (a stop one rank decides is everyone's)."""
    if not _current.active or not flags:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def _broadcast_bytes(data: bytes | None) -> bytes:
    """Rank 0's ``data`` on every rank."""
    size = torch.tensor([len(data) if data is not None else 0], dtype=torch.int64, device=_device())
    dist.broadcast(size, 0)
    if _current.main:
        assert data is not None
        buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(_device())
    else:
        buffer = torch.empty(int(size), dtype=torch.uint8, device=_device())
    if int(size):
        dist.broadcast(buffer, 0)
    return bytes(buffer.cpu().numpy().tobytes())


def broadcast_json(value: Any) -> Any:
    """Rank 0's JSON-ready ``value`` on every rank (the others pass anything, e.g. None)."""
    if not _current.active:
        return value
    data = json.dumps(value).encode() if _current.main else None
    return json.loads(_broadcast_bytes(data).decode())


def from_main(compute: Callable[[], Any]) -> Any:
    """``compute()`` on rank 0 (JSON-ready), its result on every rank. When it raises,
    rank 0 raises that error and the others ``PeerFailed``: no rank waits for a result
    that will never come."""
    if not _current.active:
        return compute()
    if _current.main:
        try:
            value = compute()
        except BaseException as error:
            broadcast_json({"error": f"{type(error).__name__}: {error}"})
            raise
        broadcast_json({"value": value})
        return value
    message = broadcast_json(None)
    if "error" in message:
        raise PeerFailed(f"rank 0 failed ({message['error']})")
    return message["value"]


def gather_tensors(tensors: dict[str, Tensor]) -> list[dict[str, Tensor]] | None:
    """Every rank's ``tensors`` on rank 0 (in rank order; None on the others), as
    safetensors bytes: no pickle."""
    from safetensors.torch import load, save

    if not _current.active:
        return [tensors]
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    size = torch.tensor([len(data)], dtype=torch.int64, device=_device())
    sizes = [torch.zeros_like(size) for _ in range(_current.world_size)]
    dist.all_gather(sizes, size)
    longest = max(int(s) for s in sizes)
    buffer = torch.zeros(longest, dtype=torch.uint8, device=_device())
    buffer[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    if _current.backend == "nccl":  # nccl has no gather
        parts = [torch.empty_like(buffer) for _ in range(_current.world_size)]
        dist.all_gather(parts, buffer)
    else:
        parts = [torch.empty_like(buffer) for _ in range(_current.world_size)]
        dist.gather(buffer, parts if _current.main else None, dst=0)
    if not _current.main:
        return None
    return [
        load(bytes(p[: int(s)].cpu().numpy().tobytes())) for p, s in zip(parts, sizes, strict=True)
    ]


def reduce_gradients(params: list[nn.Parameter], sums: list[float]) -> list[float]:
    """Sum each parameter's gradient and ``sums`` over the ranks in one all-reduce, and
    divide the gradients by the summed ``sums[1]`` (the global count of items the loss is
    a mean over) -> the summed ``sums``. Each rank backpropagated its loss times its
    count, so the result is the gradient of the global mean, as one process gets it. A
    parameter without a gradient on every rank keeps none; on some ranks only, it gets the
    others' sum."""
    if not _current.active:
        return list(sums)
    device = params[0].device if params else _device()
    parts = [
        p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=device)
        for p in params
    ]
    flags = [float(p.grad is not None) for p in params]
    # [all gradients, one has-a-gradient flag per parameter, the sums]
    flat = torch.cat([*parts, torch.tensor(flags + list(sums), device=device)]).to(_device())
    dist.all_reduce(flat)
    flat = flat.to(device)
    n = sum(p.numel() for p in params)
    has, totals = flat[n : n + len(params)], flat[n + len(params) :].tolist()
    count = totals[1]
    offset = 0
    for p, present in zip(params, has.tolist(), strict=True):
        size = p.numel()
        if present:
            grad = flat[offset : offset + size].view_as(p) / max(count, 1e-30)
            p.grad = grad.to(p.dtype)
        offset += size
    return totals


# --- the run folder -------------------------------------------------------------


def _restarted_folder(out: Path) -> Path | None:
    """The run folder a job restarted by torchrun trained in: the first of ``out``,
    ``out-2``, ... whose ``last/`` names this job's run id."""
    job = run_id()
    if job is None:
        return None
    n, folder = 1, out
    while folder.is_dir() or n == 1:
        state = folder / "last" / "state.json"
        try:
            if json.loads(state.read_text(encoding="utf-8")).get("run_id") == job:
                return folder
        except (OSError, ValueError, AttributeError):
            pass
        n += 1
        folder = out.with_name(f"{out.name}-{n}")
    return None


@contextlib.contextmanager
def claim(out: str | os.PathLike[str]) -> Iterator[tuple[Path, bool]]:
    """``run_folder.claim`` on rank 0, its path on every rank -> (folder, restarted).
    In a job torchrun restarted (``TORCHELASTIC_RESTART_COUNT`` > 0) rank 0 locks the
    folder the job trained in before, and ``restarted`` is true: resume from its last/."""
    if not _current.active:
        with run_folder.claim(out) as folder:
            yield folder, False
        return
    if not _current.main:
        found = from_main(lambda: None)
        yield Path(found["folder"]), bool(found["restarted"])
        return
    previous = _restarted_folder(Path(out)) if restart_count() else None
    with contextlib.ExitStack() as stack:
        try:
            if previous is not None:
                folder = stack.enter_context(run_folder.lock(previous))
            else:
                folder = stack.enter_context(run_folder.claim(out))
        except BaseException as error:
            broadcast_json({"error": f"{type(error).__name__}: {error}"})
            raise
        from_main(lambda: {"folder": str(folder.resolve()), "restarted": previous is not None})
        yield folder, previous is not None


@contextlib.contextmanager
def lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """``run_folder.lock`` on rank 0 (the others do not write)."""
    if _current.main:
        with run_folder.lock(folder) as locked:
            yield locked
    else:
        yield Path(folder)
