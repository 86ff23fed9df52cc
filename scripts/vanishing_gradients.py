"""Every figure and number of docs/vanishing_gradients.md, in one rerunnable command,
but those of section 2's gate starts (scripts/adding_problem.py). Every model here has
torch.nn's start (gate_init "uniform"), not the experiment's default: it shows the
gradient vanishing.

    PYTHONPATH=src python scripts/vanishing_gradients.py            # ~40 min on 2 busy cores
    PYTHONPATH=src python scripts/vanishing_gradients.py --seconds 20 --lengths 50

Figures go to docs/figures/vanishing_gradients/ (or --out), with summary.json (the
numbers quoted in the report); trained models and per-run files go to
runs/vanishing_gradients/. Every training run is bounded by --seconds of wall-clock
time, so how far a run gets depends on the machine's load: the tables give the
sequences each run saw.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from rnnkit.diagnostics import gate_trace, gradient_flow, jacobian_norms
from rnnkit.diagnostics.plots import plot_curves, plot_gate_distributions, plot_unit_heatmap
from rnnkit.synthetic import make_problem, memoryless_baseline
from rnnkit.synthetic.agreement import VERB_FORMS
from rnnkit.synthetic.experiment import (
    ExperimentConfig,
    ExperimentResult,
    build_model,
    run_experiment,
)
from rnnkit.synthetic.model import SequenceModel


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def flows(models: dict[str, SequenceModel], task_name: str, T: int, seed: int) -> tuple[dict, dict]:
    """{cell: ||dL/dh_t||}, {cell: ||dh_T/dh_t||} on one full batch of the task."""
    problem = make_problem(task_name, T)
    batch = problem.sample_full(seed, 16)
    grads, jacs = {}, {}
    for cell, model in models.items():
        grads[cell] = gradient_flow(model.rnn, batch.x, model.loss_fn(problem, batch)).norms[0, 0]
        jacs[cell] = jacobian_norms(model.rnn, batch.x)
    return grads, jacs


def train(config: ExperimentConfig, runs: Path) -> tuple[ExperimentResult, SequenceModel]:
    name = f"{config.task}{config.size}_{config.cell}" + (
        f"_gain{config.recurrent_gain}_clip{config.clip}" if config.recurrent_gain else ""
    )
    # A rerun replaces this script's own earlier run of the same name.
    shutil.rmtree(runs / name, ignore_errors=True)
    result, model, _ = run_experiment(config, runs / name)
    final = {k: round(v, 4) for k, v in result.final().items() if not k.startswith("accuracy_d")}
    log(f"{name}: {result.stopped}, solved_at={result.solved_at}, {final}")
    return result, model


def flow_figures(
    models: dict[str, SequenceModel], T: int, tag: str, out: Path, summary: dict, seed: int
) -> None:
    """Gradient-flow and Jacobian figures of ``models`` on one adding batch of length T."""
    grads, jacs = flows(models, "adding", T, seed)
    when = "at initialisation" if tag == "init" else "after training"
    plot_curves(
        grads,
        out / f"gradflow_{tag}_adding{T}.png",
        ylabel="mean ||dL/dh_t||",
        title=f"Gradient flow {when}, adding problem T = {T}",
    )
    plot_curves(
        jacs,
        out / f"jacobian_{tag}_adding{T}.png",
        ylabel="mean ||dh_T/dh_t||_2",
        title=f"Jacobian products {when}, adding T = {T}",
    )
    summary[f"{tag}_T{T}"] = {
        c: {
            "grad_first_over_last": float(grads[c][0] / grads[c][-1]),
            "jacobian_first": float(jacs[c][0]),
        }
        for c in models
    }
    log(f"{tag} gradient flow T={T}: {summary[f'{tag}_T{T}']}")


def adding_runs(
    lengths: list[int],
    seconds: float,
    base: ExperimentConfig,
    cells: list[str],
    runs: Path,
    out: Path,
    summary: dict,
) -> dict[int, dict[str, SequenceModel]]:
    """Train every cell on the adding problem at every T; accuracy figure per T."""
    trained: dict[int, dict[str, SequenceModel]] = {}
    for T in lengths:
        curves, xs, trained[T] = {}, {}, {}
        for c in cells:
            config = replace(base, task="adding", size=T, cell=c, max_seconds=seconds)
            result, trained[T][c] = train(config, runs)
            curves[c] = np.array([e["accuracy"] for e in result.evals])
            xs[c] = np.array([e["sequences"] for e in result.evals])
            summary["adding"][f"T{T}_{c}"] = {
                "solved_at": result.solved_at,
                "sequences": result.sequences,
                "seconds": round(result.seconds, 1),
                "stopped": result.stopped,
                "final": result.final(),
                "best_accuracy": max(e["accuracy"] for e in result.evals),
            }
        plot_curves(
            curves,
            out / f"adding{T}_accuracy.png",
            xs=xs,
            log=False,
            xlabel="training sequences",
            ylabel="held-out fraction with |error| < 0.04",
            title=f"Adding problem (Hochreiter & Schmidhuber 1997), T = {T}",
        )
    return trained


PARTS = ("init", "adding", "short", "copy", "agreement", "clipping")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="Budget of each training run.")
    parser.add_argument("--adding-seconds", type=float, default=120.0, help="... of adding runs.")
    parser.add_argument("--lengths", default="50,100", help="Adding-problem T values.")
    parser.add_argument("--short-lengths", default="10,20", help="... below the issue's range.")
    parser.add_argument("--copy-T", type=int, default=10)
    parser.add_argument("--agreement-modifiers", type=int, default=10)
    parser.add_argument("--cells", default="rnn_tanh,gru,gru_reset_before,lstm")
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument(
        "--max-sequences",
        type=int,
        default=200_000,
        help="Training sequences per run at most (the time budget may stop it first).",
    )
    parser.add_argument(
        "--eval-every",
        type=int,
        default=1600,
        help="Training sequences between held-out evaluations.",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/figures/vanishing_gradients")
    parser.add_argument("--runs", default="runs/vanishing_gradients")
    parser.add_argument("--parts", default=",".join(PARTS), help="A subset of " + ",".join(PARTS))
    args = parser.parse_args()
    parts = args.parts.split(",")
    if not set(parts) <= set(PARTS):
        parser.error(f"--parts must name some of {PARTS}, got {args.parts!r}")
    torch.set_num_threads(1)  # tiny models: more threads only add contention
    out, runs = Path(args.out), Path(args.runs)
    out.mkdir(parents=True, exist_ok=True)
    cells = args.cells.split(",")
    lengths = [int(t) for t in args.lengths.split(",")]
    short = [int(t) for t in args.short_lengths.split(",")]
    T0 = lengths[0]  # the adding-problem length of the after-training and clipping runs
    base = ExperimentConfig(
        # torch.nn's start: this report shows the gradient vanishing; the experiment's
        # default (chrono) is the cure, shown by scripts/adding_problem.py.
        gate_init="uniform",
        hidden_size=args.hidden_size,
        max_seconds=args.seconds,
        eval_every=args.eval_every,
        max_sequences=args.max_sequences,
        seed=args.seed,
    )
    summary: dict = {"adding": {}, "copy": {}, "agreement": {}}
    if set(parts) != set(PARTS) and (out / "summary.json").exists():  # update a full run's
        summary = json.loads((out / "summary.json").read_text())
    summary.setdefault("settings", {})[",".join(parts)] = vars(args)

    if "init" in parts:
        # 1. Gradient flow at initialisation, adding problem, every T.
        for T in short + lengths:
            fresh = {
                c: build_model(replace(base, cell=c), make_problem("adding", T)) for c in cells
            }
            flow_figures(fresh, T, "init", out, summary, args.seed)

    if "adding" in parts:
        # 2. The adding problem at the lengths, and 3. gradient flow after training.
        trained = adding_runs(lengths, args.adding_seconds, base, cells, runs, out, summary)
        flow_figures(trained[T0], T0, "trained", out, summary, args.seed)

    if "short" in parts:
        # 2b. The adding problem at short lengths, where the cells do learn it.
        trained = adding_runs(short, args.seconds, base, cells, runs, out, summary)
        flow_figures(trained[short[-1]], short[-1], "trained", out, summary, args.seed)

    if "copy" in parts:
        # 4. The copy task.
        T = args.copy_T
        curves, xs = {}, {}
        for c in cells:
            result, _ = train(replace(base, task="copy", size=T, cell=c), runs)
            curves[c] = np.array([e["cross_entropy"] for e in result.evals])
            xs[c] = np.array([e["sequences"] for e in result.evals])
            summary["copy"][c] = {
                "sequences": result.sequences,
                "final": result.final(),
                "solved_at": result.solved_at,
            }
        longest = max(xs.values(), key=len)
        curves["memoryless baseline"] = np.full(len(longest), memoryless_baseline(T))
        xs["memoryless baseline"] = longest
        plot_curves(
            curves,
            out / f"copy{T}_cross_entropy.png",
            xs=xs,
            xlabel="training sequences",
            ylabel="held-out cross-entropy (nats/step)",
            title=f"Copy task (Arjovsky et al. 2016), T = {T}",
        )

    if "agreement" in parts:
        # 5. Long-distance agreement: accuracy by distance on a large held-out set.
        K = args.agreement_modifiers
        problem = make_problem("agreement", K)
        test = problem.sample(np.random.default_rng([args.seed, 2]), 4000)
        by_distance, dxs, agreement_models = {}, {}, {}
        for c in cells:
            result, model = train(replace(base, task="agreement", size=K, cell=c), runs)
            agreement_models[c] = model
            with torch.no_grad():
                metrics = problem.metrics(model(test.x, test.lengths), test)
            dist = sorted(int(k[10:]) for k in metrics if k.startswith("accuracy_d"))
            by_distance[c] = np.array([metrics[f"accuracy_d{d}"] for d in dist])
            dxs[c] = np.array(dist)
            summary["agreement"][c] = {
                "sequences": result.sequences,
                "accuracy": metrics["accuracy"],
                "by_distance": dict(zip(dist, by_distance[c].tolist(), strict=True)),
            }
        plot_curves(
            by_distance,
            out / f"agreement{K}_by_distance.png",
            xs=dxs,
            log=False,
            xlabel="words between subject and verb",
            ylabel="held-out accuracy",
            title=f"Agreement ({VERB_FORMS[0]} / {VERB_FORMS[1]}) by distance",
        )
        counts = {int(d): int((test.info["distance"] == d).sum()) for d in dxs[cells[0]]}
        summary["agreement_test_counts"] = counts

        # 6. Gates and a unit heat map of the trained gated models on agreement sentences.
        full = problem.sample_full(np.random.default_rng([args.seed, 3]), 256)
        for c in cells:
            model = agreement_models[c]
            if model.rnn.cell.num_gates == 1:
                continue
            trace = gate_trace(model.rnn, full.x)
            summary["agreement"][c]["saturated"] = trace.saturated()
            plot_gate_distributions(
                trace,
                out / f"gates_agreement_{c}.png",
                title=f"{c} gates after training, agreement sentences",
            )
        # The units whose last state best separates singular from plural subjects.
        model = agreement_models[cells[-1]]
        trace_h = gate_trace(model.rnn, full.x).hidden if model.rnn.cell.num_gates > 1 else None
        if trace_h is not None:
            last = trace_h[-1]  # [B, H]
            gap = (last[full.target == 1].mean(0) - last[full.target == 0].mean(0)).abs()
            units = gap.argsort(descending=True)[:6].tolist()
            for number, name in enumerate(("singular", "plural")):
                b = int((full.target == number).nonzero()[0])  # the first such sentence
                plot_unit_heatmap(
                    trace_h[:, b].numpy(),
                    problem.labels(full, b),
                    units,
                    out / f"heatmap_agreement_{cells[-1]}_{name}.png",
                    title=f"{cells[-1]}: h_t of the units most tied to subject number ({name})",
                )
            summary["heatmap_units"] = units

    if "clipping" in parts:
        # 7. Clipping on a deliberately exploding start: tanh RNN, recurrent weights 4 x orthogonal
        # (gradient norms around 1e8 at the start), plain SGD so that the step is the gradient.
        clip_runs = {}
        for clip in (None, 1.0):
            config = replace(
                base,
                task="adding",
                size=T0,
                cell="rnn_tanh",
                recurrent_gain=4.0,
                optimizer="sgd",
                lr=0.05,
                clip=clip,
            )
            clip_runs[clip] = train(config, runs)[0]
        labels = {None: "no clipping", 1.0: "clip at norm 1"}
        plot_curves(
            {labels[k]: np.array(r.grad_norms) for k, r in clip_runs.items()},
            out / "clipping_grad_norms.png",
            xlabel="training step",
            ylabel="gradient norm before clipping",
            title=f"tanh RNN, W_hh = 4 x orthogonal, SGD, adding T = {T0}",
        )
        plot_curves(
            {labels[k]: np.array([e["mse"] for e in r.evals]) for k, r in clip_runs.items()},
            out / "clipping_mse.png",
            log=True,
            xlabel="training sequences",
            ylabel="held-out MSE",
            xs={
                labels[k]: np.array([e["sequences"] for e in r.evals]) for k, r in clip_runs.items()
            },
            title="Same runs: held-out error",
        )
        summary["clipping"] = {
            labels[k]: {
                "stopped": r.stopped,
                "sequences": r.sequences,
                "steps": len(r.grad_norms),
                "clipped_steps": r.clipped_steps,
                "median_norm": float(np.median(r.grad_norms)) if r.grad_norms else None,
                "max_norm": float(np.max(r.grad_norms)) if r.grad_norms else None,
                "final": r.final(),
            }
            for k, r in clip_runs.items()
        }

    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
