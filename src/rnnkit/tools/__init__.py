"""Tools over the library: ``bench`` and ``bench_bounds`` (speed against torch.nn and the
GEMM floor), ``selfcheck`` (every implementation against the reference)."""
