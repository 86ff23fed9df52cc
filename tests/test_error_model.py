"""The fp32 error model (tests/error_model.py): it bounds real rounding errors, including
cancellation, and it is tight enough that a kernel with a slightly wrong gate fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from error_model import SAFETY, UNIT_ROUNDOFF, RoundingNoise, fp32_truth_and_bounds
from rnnkit.nn.kernels import fused


def test_a_cancelling_sum_gets_a_bound_of_its_terms_not_its_result():
    """sum(a * b) whose terms cancel: fp32 loses digits relative to the small result; the
    bound scales with sum |a b| (Higham's gamma_n |a||b|), so it covers that, while a
    well-conditioned sum of the same length gets a bound near u |result|."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 512, generator=g)
    b = torch.randn(512, 1, generator=g)
    b_cancel = b.clone()
    b_cancel[-1] -= (a @ b).item() / a[0, -1].item()  # the exact sum is now ~0
    relative_bounds = {}
    for cancelling in (False, True):
        lhs, rhs = (a, b_cancel) if cancelling else (a.abs(), b.abs())
        truth, (bound,) = fp32_truth_and_bounds(lambda l=lhs, r=rhs: [l.double() @ r.double()])
        err = (lhs @ rhs).double().sub(truth[0]).abs().item()
        assert err <= bound
        magnitude = (lhs.double().abs() @ rhs.double().abs()).item()
        assert bound <= SAFETY * 1.01 * 513 * UNIT_ROUNDOFF * magnitude  # gamma_n |a||b|
        relative_bounds[cancelling] = bound / truth[0].abs().item()
    assert relative_bounds[True] > 1000 * relative_bounds[False]


def test_views_and_copies_are_exact_arithmetic_is_not():
    x = torch.randn(4, 3, dtype=torch.float64)
    with RoundingNoise(0, coherent=False):
        moved = x.t().contiguous().t().clone()
        summed = x + 1.0
    assert torch.equal(moved, x)
    assert not torch.equal(summed, x + 1.0)
    assert (summed - (x + 1.0)).abs().max() <= 8 * UNIT_ROUNDOFF * (x + 1.0).abs().max()


_MUTATION = (
    "const S z = sigmoid(ab[H + j] + ghb[H + j] + b_hh[H + j]);",
    "const S z = sigmoid(ab[H + j] + ghb[H + j] + b_hh[H + j]) * S(1.0001);",
)

_RUN_WITH_SOURCE = """
import sys
from pathlib import Path
import pytest
from rnnkit.nn.kernels import fused
fused._SOURCE = Path(sys.argv[1])
# -n 0: in this process, the one whose fused._SOURCE is the mutant (not pytest-xdist workers)
options = ["-p", "no:cacheprovider", "-n", "0", "-x", "-q"]
sys.exit(pytest.main([*options, sys.argv[2], "-k", sys.argv[3]]))
"""


@pytest.mark.slow
@pytest.mark.skipif(fused.load() is None, reason="the fused extension did not build")
def test_a_gate_off_by_one_part_in_ten_thousand_fails_the_fp32_comparisons(tmp_path):
    """Mutation check: the GRU's update gate scaled by 1 + 1e-4 in the fused kernel (forward
    only, so the gradients no longer match the outputs either). The fp32 comparisons alone
    (registry float32 cases) must fail, with the error model's message."""
    source = fused._SOURCE.read_text()
    assert source.count(_MUTATION[0]) == 1, "the mutated line moved: update the test"
    mutant = tmp_path / fused._SOURCE.name
    mutant.write_text(source.replace(*_MUTATION))
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path / "build"))  # keep the cache clean
    tests = Path(__file__).with_name("test_kernels.py")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _RUN_WITH_SOURCE,
            str(mutant),
            str(tests),
            "fused_matches_composite and float32 and gru and not reset_before",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parent,
        timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, f"the mutant passed the fp32 comparisons:\n{output[-3000:]}"
    assert "the most a correct fp32 computation may err here" in output, output[-3000:]
