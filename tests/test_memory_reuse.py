"""The allocator setting the fused kernels apply (rnnkit/nn/kernels/memory.py): a layer's
training calls reuse the pages their temporaries had (next to no page faults per call),
where RNNKIT_MALLOC=system leaves glibc's default, under which every call faults its large
temporaries in again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import resource, torch, rnnkit
from rnnkit.nn.kernels import fused
torch.set_num_threads(1)
torch.manual_seed(0)
layer = rnnkit.GRU(256, 512)  # S2's layer: temporaries of tens of megabytes per call
x, dout = torch.randn(100, 64, 256, requires_grad=True), torch.randn(100, 64, 512)
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = layer(x)
    out.float().backward(dout)
for _ in range(6):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 10
print(fused.compile_info().get("keeps_freed_memory"), faults)
"""


def _probe(**env: str) -> tuple[str, int]:
    run = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    applied, faults = run.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a glibc setting (Linux)")
def test_training_calls_reuse_their_pages_unless_opted_out():
    applied, kept = _probe()
    system_applied, system = _probe(RNNKIT_MALLOC="system")
    assert (applied, system_applied) == ("True", "False")
    assert system > 5000, system  # the test can tell: glibc's default faults pages in again
    # Kept: from none to a few thousand per call. Seen on an AVX2-only EPYC: 0 to 2,240 per
    # call averaged over 10 calls (0 to 4,266 over 3), about 26,000 to 30,000 by default
    # (scratch runs of this probe, fp32 and bf16): now and then a call's heap grows
    # by one [T*B, H] temporary (3,200 pages, 13 MB) that fragmentation left no room for,
    # and that growth is kept for the calls after it. The default faults every temporary
    # in again on every call.
    assert kept < system / 5, (kept, system)
