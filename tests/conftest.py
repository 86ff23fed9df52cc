import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))  # the tests' own helpers (registry, ...)

# Property tests draw the same examples on every run and every machine, so a red run can
# be reproduced by anyone (and a failure prints the example, and a blob to replay it).
# `pytest --hypothesis-profile explore` draws new examples each run, to go looking.
settings.register_profile("repro", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile("repro")

# The CLI's error boundary turns bad input into one line and exit 2 as usual, but lets an
# unexpected exception (a bug) propagate, so a test sees it as the exception it is.
os.environ.setdefault("RNNKIT_RAISE_BUGS", "1")

# The GEMM choice (rnnkit.nn.kernels.gemm) caches its probes per machine; the suite keeps
# them in a folder of its own, never in the user's ~/.cache (subprocesses inherit it).
_GEMM_CACHE = tempfile.mkdtemp(prefix="rnnkit-test-cache-")
os.environ["RNNKIT_CACHE_DIR"] = _GEMM_CACHE
atexit.register(shutil.rmtree, _GEMM_CACHE, ignore_errors=True)

# pytest-xdist (`-n auto` in pyproject.toml) runs the suite in one process per core; each
# worker then gets its share of the cores, for torch here and for the subprocesses that tests
# start, so that the workers together use the machine once, not once each.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    _THREADS = max(1, (_CORES or 1) // _WORKERS)
    torch.set_num_threads(_THREADS)
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _cli_commands():
    """Every command on ``rnnkit.cli.app``, as the console script has them."""
    from rnnkit.cli import register

    register()


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Tiny models on a shared machine: a second thread only adds synchronisation."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def step_calls(monkeypatch):
    """Counts the calls of the fused single-step function (the streaming fast path)."""
    from rnnkit.nn import kernels
    from rnnkit.nn.kernels import fused

    calls: list[int] = []

    def counting(*args, **kwargs):
        calls.append(1)
        return fused.step(*args, **kwargs)

    kernel = kernels.Kernel("fused_cpu", fused.supports, fused.run_layer, counting)
    monkeypatch.setattr(kernels, "_kernels", [kernel])
    return calls


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the shared data sets at {SHARED_DATA} (absent on this machine)")
    return SHARED_DATA


def pytest_sessionfinish(session):
    """A pytest-xdist worker hands its observed errors to the controller."""
    from helpers import OBSERVED

    if hasattr(session.config, "workeroutput"):
        observed = [[*key, *value] for key, value in OBSERVED.items()]
        session.config.workeroutput["observed"] = observed


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """The controller merges each worker's observed errors (an xdist hook; see above)."""
    from helpers import merge_observed

    output = getattr(node, "workeroutput", {})
    for module, kind, worst, count in output.get("observed", []):
        merge_observed((module, kind), worst, count)


def pytest_terminal_summary(terminalreporter):
    """Print the largest error each test module observed: the relative error per fixed
    tolerance, and the largest fraction of the fp32 error model's bound."""
    from helpers import OBSERVED

    if not OBSERVED:
        return
    terminalreporter.section("largest observed errors")
    for (module, kind), (worst, count) in sorted(OBSERVED.items()):
        terminalreporter.write_line(
            f"{module:32s} {kind}: max {worst:.2e} over {count} comparisons"
        )
