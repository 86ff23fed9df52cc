"""`rnnkit diagnose`: gradient flow, Jacobian norms and gates of a model on a task batch."""

from __future__ import annotations

from pathlib import Path

import typer

from rnnkit.cli import app
from rnnkit.common.io import atomic_write_text


@app.command()
def diagnose(
    task: str = typer.Option("adding", help="adding, copy or agreement."),
    size: int = typer.Option(50, help="T (adding, copy) or modifiers (agreement)."),
    cell: str = typer.Option("gru", help="rnn_tanh, rnn_relu, gru, gru_reset_before, lstm."),
    hidden_size: int = typer.Option(16),
    num_layers: int = typer.Option(1),
    batch_size: int = typer.Option(16),
    seed: int = typer.Option(0, help="Seed for the fresh model's weights and the batch."),
    gate_init: str = typer.Option(
        "chrono", help="The fresh model's gate biases: chrono, forget1 or uniform (torch.nn's)."
    ),
    model: str = typer.Option(
        "",
        help="A run directory of `rnnkit experiment` (or one of its checkpoints, or the "
        "model.safetensors of an older version); its config replaces the model options.",
    ),
    lm: str = typer.Option(
        "",
        help="A language-model run or checkpoint (`rnnkit train lm`): diagnose it on --text "
        "instead of a task model.",
    ),
    text: str = typer.Option(
        "", help="With --lm: the text to run (a string; @FILE reads a file, UTF-8)."
    ),
    units: str = typer.Option(
        "",
        help="Units to show in the heat map (default: 0-7 for a task model; with --lm, "
        "the 8 whose state varies most over the text).",
    ),
    jacobian: bool = typer.Option(True, help="Also the exact ||dh_T/dh_t|| (H backwards)."),
    out: str = typer.Option(
        "runs/diagnose",
        help="Folder for numbers.json and the PNGs (a fresh numbered one if it holds files).",
    ),
) -> None:
    """Write gradient_flow.png, jacobian.png, gates.png, heatmap.png and numbers.json.

    Without --model, a freshly initialised model: the gradient flow at initialisation.
    With --lm RUN --text TEXT, a trained language model on that text.
    """
    from rich.console import Console

    from rnnkit.cli.errors import boundary
    from rnnkit.common.config import check_range

    with boundary():
        from rnnkit.train import run_folder

        check_range("--batch-size", batch_size, min=1)
        chosen = _parse_units(units)
        # A folder of its own (--out, else --out-2, ...): earlier results are never replaced.
        with run_folder.claim(out) as folder:
            if lm:
                numbers = _diagnose_lm(lm, text, chosen, jacobian, str(folder))
            else:
                numbers = _diagnose_task(
                    task,
                    size,
                    cell,
                    hidden_size,
                    num_layers,
                    batch_size,
                    seed,
                    gate_init,
                    model,
                    chosen,
                    jacobian,
                    str(folder),
                )
        _report(Console(), numbers, str(folder))


def _parse_units(units: str) -> list[int] | None:
    """``--units 0,3,5`` as a list (None when not given)."""
    if not units:
        return None
    try:
        chosen = [int(u) for u in units.split(",") if u.strip()]
    except ValueError:
        raise ValueError(f"--units must be integers, comma-separated: {units!r}") from None
    return chosen


def _check_units(chosen: list[int], hidden_size: int) -> None:
    bad = [u for u in chosen if not 0 <= u < hidden_size]
    if bad:
        raise ValueError(f"--units {bad} are out of range for hidden size {hidden_size}")


def _diagnose_task(
    task: str,
    size: int,
    cell: str,
    hidden_size: int,
    num_layers: int,
    batch_size: int,
    seed: int,
    gate_init: str,
    model: str,
    chosen: list[int] | None,
    jacobian: bool,
    out: str,
) -> dict:
    from rnnkit.synthetic import make_problem
    from rnnkit.synthetic.diagnose import diagnose_model
    from rnnkit.synthetic.experiment import ExperimentConfig, build_model, load_run

    if model:
        net, config = load_run(model)
    else:
        config = ExperimentConfig(
            task=task,
            size=size,
            cell=cell,
            hidden_size=hidden_size,
            num_layers=num_layers,
            seed=seed,
            gate_init=gate_init,
        )
        net = build_model(config, make_problem(task, size))
    if chosen is None:
        chosen = list(range(min(8, config.hidden_size)))
    _check_units(chosen, config.hidden_size)
    problem = make_problem(config.task, config.size)
    batch = problem.sample_full(seed, batch_size)
    out_dir = Path(out)
    numbers = diagnose_model(
        net,
        problem,
        batch,
        out_dir,
        units=chosen,
        jacobian=jacobian,
        title=f"{config.cell} on {config.task}({config.size})",
    )
    _write_numbers(out_dir, numbers)
    return numbers


def _write_numbers(out: Path, numbers: dict) -> None:
    import json

    atomic_write_text(out / "numbers.json", json.dumps(numbers, indent=1))


def _diagnose_lm(run: str, text: str, chosen: list[int] | None, jacobian: bool, out: str) -> dict:
    from rnnkit.tasks.lm import api as lm
    from rnnkit.tasks.lm.diagnose import diagnose_lm

    if not text:
        raise ValueError("--lm needs --text TEXT (or --text @FILE): the text to run")
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read the --text file {path}: {e}") from None
    model, tokenizer, _ = lm.load(run)
    if chosen is not None:
        _check_units(chosen, model.rnn.output_size)
    numbers = diagnose_lm(model, tokenizer, text, out, units=chosen, jacobian=jacobian)
    _write_numbers(Path(out), numbers)
    return numbers


def _report(console, numbers: dict, out: str) -> None:
    for key, ratio in numbers["first_over_last"].items():
        console.print(f"{key}: ||dL/dh_first|| / ||dL/dh_last|| = {ratio:.3g}")
    if "jacobian_norms" in numbers:
        console.print(f"||dh_T/dh_0||_2 = {numbers['jacobian_norms'][0]:.3g}")
    for gate, fraction in numbers.get("saturated", {}).items():
        if isinstance(fraction, dict):  # a language model: per layer
            text = ", ".join(f"{g} {f:.1%}" for g, f in fraction.items())
            console.print(f"{gate} gates saturated (< 0.1 or > 0.9): {text}")
        else:
            console.print(f"gate {gate}: {fraction:.1%} saturated (< 0.1 or > 0.9)")
    if "heatmap_units" in numbers and "tokens" in numbers:
        console.print(f"heat map: units {numbers['heatmap_units']} of the last layer")
    console.print(f"wrote {out}")
