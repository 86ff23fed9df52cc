"""The adding problem (Hochreiter & Schmidhuber 1997) at long T: why torch.nn's start
never leaves the trivial solution, and the grid of (cell, T) runs with the experiment's
defaults (the chrono gate start). The figures and tables of docs/vanishing_gradients.md,
section 2.

    PYTHONPATH=src python scripts/adding_problem.py                       # every part
    PYTHONPATH=src python scripts/adding_problem.py --parts grid --lengths 400 --seeds 1,2

Parts:
    flow       ||dL/dh_t|| of fresh models at T = --flow-T under each gate start.
    diagnosis  short LSTM (and GRU) runs at T = --diagnosis-T, one change at a time from
               the old defaults: optimiser and batch (RMSprop, 20), forget bias 1, chrono.
    grid       --cells x --lengths (x --seeds) with the experiment's defaults, each run
               stopped when solved or after --seconds; then results.md.
    table      results.md again from summary.json (every grid row run so far).

Every run stops when Hochreiter & Schmidhuber's criterion holds on the 1000 held-out
sequences (every one within 0.04 of its target) or when its budget is spent; its final
model is then scored on --test-size fresh test sequences. A run counts as solved here
when that test MSE is below --threshold times the trivial MSE (predicting the mean
target: the test targets' variance). Figures and summary.json go to
docs/figures/adding_problem/ (--out), with results.md (the table); run folders to
runs/adding_problem/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from rnnkit.common.io import atomic_savefig, atomic_write_text
from rnnkit.diagnostics import gradient_flow
from rnnkit.diagnostics.plots import plot_curves
from rnnkit.synthetic import make_problem
from rnnkit.synthetic.experiment import (
    ExperimentConfig,
    ExperimentResult,
    build_model,
    run_experiment,
)
from rnnkit.synthetic.model import SequenceModel

PARTS = ("flow", "diagnosis", "grid", "table")
STARTS = {"lstm": ("uniform", "forget1", "chrono"), "gru": ("uniform", "chrono")}
STARTS["gru_reset_before"] = STARTS["gru"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def trivial_mse(targets: torch.Tensor) -> float:
    """The MSE of the best constant prediction on these targets: their variance."""
    return float(targets.double().var(unbiased=False))


@torch.no_grad()
def test_mse(model: SequenceModel, T: int, size: int, seed: int) -> tuple[float, float, float]:
    """-> (MSE, trivial MSE, fraction within 0.04) of ``model`` on ``size`` fresh test
    sequences (generator (seed, 2): neither the training nor the held-out draws)."""
    problem = make_problem("adding", T)
    batch = problem.sample(np.random.default_rng([seed, 2]), size)
    model.eval()
    pred = torch.cat(
        [
            model(x, lengths)
            for x, lengths in zip(
                batch.x.split(1000, dim=1), batch.lengths.split(1000), strict=True
            )
        ]
    ).squeeze(-1)  # [N]
    err = (pred - batch.target).double()
    return (
        float((err**2).mean()),
        trivial_mse(batch.target),
        float((err.abs() < 0.04).double().mean()),
    )


def train(config: ExperimentConfig, name: str, runs: Path, args) -> dict:
    """One run -> its row: budget used, held-out curve, test MSE."""
    shutil.rmtree(runs / name, ignore_errors=True)  # a rerun replaces this script's own
    result, model, _ = run_experiment(config, runs / name)
    mse, trivial, within = test_mse(model, config.size, args.test_size, config.seed)
    held_out = make_problem("adding", config.size).sample(
        np.random.default_rng([config.seed, 0]), config.eval_size
    )  # the held-out set ProblemTask draws (rnnkit.synthetic.task)
    held_trivial = trivial_mse(held_out.target)
    row = {
        "name": name,
        "cell": config.cell,
        "T": config.size,
        "seed": config.seed,
        "gate_init": config.gate_init,
        "optimizer": config.optimizer,
        "batch_size": config.batch_size,
        "steps": len(result.grad_norms),
        "sequences": result.sequences,
        "seconds": round(result.seconds, 1),
        "stopped": result.stopped,
        "hs_solved_at": result.solved_at,
        "test_mse": mse,
        "test_trivial_mse": trivial,
        "test_relative_mse": mse / trivial,
        "test_within_0.04": within,
        "solved": mse < args.threshold * trivial,
        "curve": curve(result, held_trivial),
    }
    log(
        f"{name}: {result.stopped} after {row['steps']} steps ({row['seconds']} s); "
        f"test MSE {mse:.2e} = {mse / trivial:.4f} x trivial; within 0.04: {within:.3f}"
    )
    return row


def curve(result: ExperimentResult, trivial: float) -> dict[str, list[float]]:
    """The held-out MSE over the trivial held-out MSE at each evaluation."""
    return {
        "sequences": [e["sequences"] for e in result.evals],
        "seconds": [e["seconds"] for e in result.evals],
        "relative_mse": [e["mse"] / trivial for e in result.evals],
    }


def plot_relative(
    rows: list[dict], path: Path, title: str, x: str, threshold: float, label=lambda r: r["name"]
) -> None:
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for r in rows:
        ax.plot(r["curve"][x], r["curve"]["relative_mse"], label=label(r))
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.axhline(threshold, color="grey", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set(
        title=title,
        xlabel={
            "seconds": "wall seconds (loaded shared machine)",
            "sequences": "training sequences",
        }[x],
        ylabel="held-out MSE / trivial MSE",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    atomic_savefig(fig, path, dpi=100)


def flow_part(args, base: ExperimentConfig, runs: Path, out: Path, summary: dict) -> None:
    """Gradient flow at initialisation at T = --flow-T, every start, one figure per cell."""
    T = args.flow_T
    problem = make_problem("adding", T)
    batch = problem.sample_full(args.seed, 16)
    numbers = summary.setdefault("flow", {})
    for cell in args.cells.split(","):
        curves = {}
        for start in STARTS[cell]:
            config = ExperimentConfig(size=T, cell=cell, gate_init=start, seed=args.seed)
            model = build_model(config, problem)
            norms = gradient_flow(model.rnn, batch.x, model.loss_fn(problem, batch)).norms[0, 0]
            curves[start] = norms
            ratio = numbers[f"{cell}_{start}"] = float(norms[0] / norms[-1])
            half = numbers[f"{cell}_{start}_half"] = float(norms[T // 2] / norms[-1])
            log(
                f"flow {cell} {start}: ||dL/dh_t|| / ||dL/dh_{T - 1}|| = {ratio:.3g} at t = 0, "
                f"{half:.3g} at t = {T // 2}"
            )
        plot_curves(
            curves,
            out / f"gradflow_init_T{T}_{cell}.png",
            ylabel="mean ||dL/dh_t||",
            title=f"{cell} at initialisation, adding problem T = {T}: gate starts",
        )


def diagnosis_part(args, base: ExperimentConfig, runs: Path, out: Path, summary: dict) -> None:
    """One change at a time from the old defaults (torch.nn's start, Adam 1e-3, 32)."""
    T = args.diagnosis_T
    old = replace(
        base, size=T, cell="lstm", gate_init="uniform", max_seconds=args.diagnosis_seconds
    )
    runs_ = {
        "lstm, old defaults (uniform start, Adam 1e-3, batch 32)": old,
        "lstm, RMSprop 1e-3, batch 20 (uniform start)": replace(
            old, optimizer="rmsprop", batch_size=20
        ),
        "lstm, forget bias 1": replace(old, gate_init="forget1"),
        "lstm, chrono start": replace(old, gate_init="chrono"),
        "gru, old defaults (uniform start)": replace(old, cell="gru"),
        "gru, chrono start": replace(old, cell="gru", gate_init="chrono"),
    }
    rows = []
    for i, (label, config) in enumerate(runs_.items()):
        row = train(
            config,
            f"diagnosis{T}_{i}_{config.cell}_{config.gate_init}_{config.optimizer}",
            runs,
            args,
        )
        row["label"] = label
        rows.append(row)
    summary["diagnosis"] = rows
    plot_relative(
        rows,
        out / f"diagnosis_T{T}.png",
        f"Adding problem T = {T}: one change at a time",
        "sequences",
        args.threshold,
        label=lambda r: r["label"],
    )


def grid_part(args, base: ExperimentConfig, runs: Path, out: Path, summary: dict) -> None:
    grid = summary.setdefault("grid", {})
    for T in (int(t) for t in args.lengths.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            rows = []
            for cell in args.cells.split(","):
                config = replace(base, size=T, cell=cell, seed=seed)
                row = train(config, f"grid_T{T}_{cell}_seed{seed}", runs, args)
                grid[row["name"]] = row
                rows.append(row)
            plot_relative(
                rows,
                out / f"grid_T{T}_seed{seed}.png",
                f"Adding problem T = {T}, seed {seed}: the experiment's defaults",
                "seconds",
                args.threshold,
                label=lambda r: r["cell"],
            )
    write_table(summary, out, args.threshold)


def first_below(row: dict, threshold: float) -> str:
    """When the held-out MSE first fell below ``threshold`` x trivial: sequences (seconds)."""
    c = row["curve"]
    for n, t, m in zip(c["sequences"], c["seconds"], c["relative_mse"], strict=True):
        if m < threshold:
            return f"{n:,} ({t:.0f} s)"
    return "never"


def write_table(summary: dict, out: Path, threshold: float) -> None:
    lines = [
        "| cell | T | seed | steps (batches of 32) | training sequences | wall time (s) | "
        f"held-out MSE first < {threshold} x trivial at | "
        "all 1000 held-out within 0.04 (H&S) | test MSE | test MSE / trivial | "
        f"solved (test MSE < {threshold} x trivial) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = sorted(summary.get("grid", {}).values(), key=lambda r: (r["T"], r["seed"], r["cell"]))
    for r in rows:
        hs = f"yes, at {r['hs_solved_at']:,}" if r["hs_solved_at"] is not None else "no"
        lines.append(
            f"| {r['cell']} | {r['T']} | {r['seed']} | {r['steps']:,} | {r['sequences']:,} | "
            f"{r['seconds']:.0f} | {first_below(r, threshold)} | {hs} | {r['test_mse']:.2e} | "
            f"{r['test_relative_mse']:.4f} | {'**yes**' if r['solved'] else 'no'} |"
        )
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")


def table_part(args, base: ExperimentConfig, runs: Path, out: Path, summary: dict) -> None:
    """results.md again from summary.json (the grid's rows), without running anything."""
    write_table(summary, out, args.threshold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"some of {PARTS}")
    parser.add_argument("--cells", default="lstm,gru,gru_reset_before")
    parser.add_argument("--lengths", default="50,100,200,400", help="grid: the values of T")
    parser.add_argument("--seeds", default="0", help="grid: one run per seed")
    parser.add_argument("--seconds", type=float, default=300.0, help="grid: budget per run")
    parser.add_argument("--max-sequences", type=int, default=5_000_000)
    parser.add_argument("--threshold", type=float, default=0.01, help="solved: test MSE / trivial")
    parser.add_argument("--test-size", type=int, default=10_000)
    parser.add_argument("--flow-T", type=int, default=200)
    parser.add_argument("--diagnosis-T", type=int, default=200)
    parser.add_argument("--diagnosis-seconds", type=float, default=90.0)
    parser.add_argument("--seed", type=int, default=0, help="flow and diagnosis")
    parser.add_argument("--out", default="docs/figures/adding_problem")
    parser.add_argument("--runs", default="runs/adding_problem")
    args = parser.parse_args()
    parts = args.parts.split(",")
    if not set(parts) <= set(PARTS):
        parser.error(f"--parts must name some of {PARTS}, got {args.parts!r}")
    torch.set_num_threads(1)  # H = 32: a second thread only adds contention
    out, runs = Path(args.out), Path(args.runs)
    out.mkdir(parents=True, exist_ok=True)
    base = replace(  # the experiment's defaults but the budget
        ExperimentConfig(),
        max_seconds=args.seconds,
        max_sequences=args.max_sequences,
        seed=args.seed,
    )
    summary: dict = {}
    if (out / "summary.json").exists():  # a partial rerun updates what it reruns
        summary = json.loads((out / "summary.json").read_text())
    summary.setdefault("settings", {})[args.parts] = vars(args) | {"base": asdict(base)}
    for part, run in (
        ("flow", flow_part),
        ("diagnosis", diagnosis_part),
        ("grid", grid_part),
        ("table", table_part),
    ):
        if part in parts:
            run(args, base, runs, out, summary)
            atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
