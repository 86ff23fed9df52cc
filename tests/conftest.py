import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # the tests' own helpers (registry, ...)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the shared data sets at {SHARED_DATA} (absent on this machine)")
    return SHARED_DATA


def pytest_terminal_summary(terminalreporter):
    """Print the largest relative error each test module observed, per tolerance."""
    from helpers import OBSERVED

    if not OBSERVED:
        return
    terminalreporter.section("largest observed relative errors")
    for (module, rtol), (worst, count) in sorted(OBSERVED.items()):
        terminalreporter.write_line(
            f"{module:32s} tolerance {rtol:.0e}: max {worst:.2e} over {count} comparisons"
        )
