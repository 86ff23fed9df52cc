"""`rnnkit experiment`: train a small model of one cell on a long-range task."""

from __future__ import annotations

import typer

from rnnkit.cli import app


@app.command()
def experiment(
    task: str = typer.Option("adding", help="adding, copy or agreement."),
    size: int = typer.Option(50, help="T (adding, copy) or max modifiers (agreement)."),
    cell: str = typer.Option("gru", help="rnn_tanh, rnn_relu, gru, gru_reset_before, lstm."),
    hidden_size: int = typer.Option(32),
    num_layers: int = typer.Option(1),
    batch_size: int = typer.Option(32),
    optimizer: str = typer.Option("adam", help="adam, sgd or rmsprop."),
    lr: float = typer.Option(1e-3),
    clip: float = typer.Option(0.0, help="Max gradient norm; 0 means no clipping."),
    recurrent_gain: float = typer.Option(
        0.0, help="If > 0, each H x H block of weight_hh is orthogonal x this gain."
    ),
    gate_init: str = typer.Option(
        "chrono",
        help="Gate biases at the start: chrono (Tallec & Ollivier 2018: memory time "
        "constants spread up to the task's sequence length), forget1 (LSTM forget bias 1) "
        "or uniform (torch.nn's).",
    ),
    max_sequences: int = typer.Option(200_000, help="Stop after this many sequences."),
    max_seconds: float = typer.Option(60.0, help="Stop after this many seconds."),
    eval_every: int = typer.Option(3200, help="Evaluate every this many sequences."),
    eval_size: int = typer.Option(1000, help="Held-out sequences per evaluation."),
    seed: int = typer.Option(0),
    out: str = typer.Option(
        "runs/experiment",
        help="Run directory (a fresh numbered one if it already holds a run, unless --resume).",
    ),
    resume: bool = typer.Option(
        False,
        help="Continue the run in --out exactly where it stopped, with its saved settings; "
        "only --max-sequences and --max-seconds are taken from the command line.",
    ),
) -> None:
    """Train until solved or out of budget; print the task metric as it goes.

    A run directory holds the trainer's checkpoints (last/, best/; for `rnnkit diagnose
    --model` and --resume) and metrics.jsonl, and the summary derived from them:
    result.json, curve.png (the metric against training sequences) and grad_norms.png (the
    pre-clipping gradient norm of every step).
    """
    from rnnkit.cli.errors import boundary

    with boundary():
        from dataclasses import replace

        from rich.console import Console

        from rnnkit.synthetic.experiment import ExperimentConfig, load_config, run_experiment

        if resume:
            config = replace(load_config(out), max_sequences=max_sequences, max_seconds=max_seconds)
        else:
            config = ExperimentConfig(
                task=task,
                size=size,
                cell=cell,
                hidden_size=hidden_size,
                num_layers=num_layers,
                batch_size=batch_size,
                optimizer=optimizer,
                lr=lr,
                clip=clip or None,
                recurrent_gain=recurrent_gain or None,
                gate_init=gate_init,
                max_sequences=max_sequences,
                max_seconds=max_seconds,
                eval_every=eval_every,
                eval_size=eval_size,
                seed=seed,
            )
        console = Console()

        def show(entry: dict[str, float]) -> None:
            shown = {k: v for k, v in entry.items() if not k.startswith("accuracy_d")}
            console.print("  ".join(f"{k} {v:.4g}" for k, v in shown.items()))

        result, _, run_dir = run_experiment(config, out, resume=resume, on_eval=show)
        solved = (
            f"solved after {result.solved_at} sequences"
            if result.solved_at is not None
            else "not solved"
        )
        console.print(
            f"[bold]{config.cell} on {config.task}({config.size})[/bold]: {solved}; "
            f"stopped: {result.stopped}; "
            f"{result.sequences} sequences in {result.seconds:.1f} s; clipping fired on "
            f"{result.clipped_steps} of {len(result.grad_norms)} steps; wrote {run_dir}"
        )
