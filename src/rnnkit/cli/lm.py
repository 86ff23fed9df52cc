"""`rnnkit train lm` and `rnnkit sample`: language models from the command line
(`rnnkit eval RUN FILE` scores one, see ``rnnkit.cli.runs``).

Every field of the
run's config sections is an override: `--model.hidden_size 512`, `--optim.lr=0.1`,
`--trainer.epochs 5`; `--config FILE` (JSON or TOML) sets many at once; the list with
defaults is in `rnnkit train lm --help`.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from rnnkit.cli import TRAIN_SETTINGS, app, overrides_epilog, train_app
from rnnkit.cli.errors import boundary
from rnnkit.decoding.config import SampleConfig
from rnnkit.tasks.lm import config as lm_config


def _describe(tokenizer, loss: float | None) -> str:  # type: ignore[no-untyped-def]
    from rnnkit.tasks.lm import api as lm

    if loss is None:
        return ""
    return " ".join(f"{k} {v:.3f}" for k, v in lm.describe(tokenizer, loss).items())


def _go_on(run) -> str:  # type: ignore[no-untyped-def]
    """The override that lets a resumed run go past where this one stopped."""
    if run.result.stopped in ("max_steps", "max_minutes"):
        return f"--trainer.{run.result.stopped} none"
    return f"--trainer.epochs {run.sections.trainer.epochs + 2}"


def _stream_samples(model, tokenizer, config) -> None:  # type: ignore[no-untyped-def]
    """Print one continuation as it is generated; several in a batch, each when done."""
    import torch

    from rnnkit.decoding.sampling import encode_prime, generate

    encode_prime(tokenizer, config.prime)  # an unknown character fails before any output
    if config.num_samples == 1:
        sys.stdout.write(config.prime)
        for ids in generate(model, tokenizer, config):
            sys.stdout.write("".join(tokenizer.decode_stream([int(ids[0])])))
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    steps = list(generate(model, tokenizer, config))
    rows = torch.stack(steps, dim=1).tolist() if steps else [[]] * config.num_samples
    for n, row in enumerate(rows):
        text = "".join(tokenizer.decode_stream([i for i in row if i != tokenizer.pad_id]))
        typer.echo(f"--- sample {n + 1} ---\n{config.prime}{text}")


@train_app.command(
    "lm", context_settings=TRAIN_SETTINGS, epilog=overrides_epilog(lm_config.defaults())
)
def train_lm(
    ctx: typer.Context,
    text: Annotated[
        Path | None,
        typer.Option("--text", help="Training text file (default: Python's own reference docs)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="JSON or TOML config file.")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Continue a run (its directory or a checkpoint) exactly."),
    ] = None,
    encoding: Annotated[
        str | None, typer.Option("--encoding", help="Text encoding (same as --data.encoding).")
    ] = None,
    samples: Annotated[int, typer.Option("--samples", help="Samples to print after training.")] = 3,
) -> None:
    """Train a recurrent language model and print samples from it.

    With no arguments: a character-level 2x256 GRU on the Python reference documentation
    (pydoc_data.topics, on every machine), about 2 minutes on 2 cores.
    """
    from rnnkit.common import config as cfg
    from rnnkit.tasks.lm import api as lm

    with boundary("--data.encoding"):
        cfg.check_range("--samples", samples, min=0)
        args = list(ctx.args)
        if text is not None:
            args += ["--data.text", str(text)]
        if encoding is not None:
            args += ["--data.encoding", encoding]
        started = time.perf_counter()
        if resume is None:
            run = lm.train(lm.configure(config, tuple(args)))
        else:
            changes = cfg.read_file(config) if config else {}
            overrides = cfg.parse_overrides(args)
            # each value's type and range, before the run is read (its config then checks
            # the settings that span fields)
            if config:
                cfg.merge(lm_config.defaults(), changes, str(config), validate=False)
            cfg.merge(lm_config.defaults(), overrides, "--", validate=False)
            for section, values in overrides.items():
                changes.setdefault(section, {}).update(values)
            run = lm.train(resume=resume, changes=changes)
        r = run.result
        best = r.best_valid_loss
        typer.echo(
            f"trained {r.step} steps in {time.perf_counter() - started:.0f} s "
            f"({r.tokens_per_s:,.0f} tokens/s)"
            + ("" if best is None else f"; best validation loss {best:.4f} nats/token ")
            + _describe(run.tokenizer, best)
        )
        if samples:
            model, tokenizer, saved = lm.load(run.out_dir)
            sample_c = cfg.update(saved.sample, {"num_samples": samples}, "sample")
            typer.echo(f"\nsamples from {run.out_dir}/best (temperature {sample_c.temperature}):")
            _stream_samples(model, tokenizer, sample_c)
        primed = run.sections.sample.prime
        prime = f" --prime {shlex.quote(primed)}" if primed else ""
        typer.echo(
            f"\nrun directory: {run.out_dir} (metrics.jsonl, loss.png, best/, last/)\n"
            f"more samples:  rnnkit sample {run.out_dir}{prime} --temperature 0.7\n"
            f"continue:      rnnkit train lm --resume {run.out_dir} {_go_on(run)}"
        )


_S = SampleConfig()  # the defaults shown by `rnnkit sample --help` are the config's


@app.command("sample")
def sample_command(
    checkpoint: Annotated[Path, typer.Argument(help="Run directory (uses best/) or checkpoint.")],
    prime: str = typer.Option(_S.prime, "--prime", help="Text the continuations start from."),
    max_tokens: int = typer.Option(_S.max_tokens, "--max-tokens", help="Tokens per sample."),
    num_samples: int = typer.Option(_S.num_samples, "--num-samples", "-n", help="Samples."),
    temperature: float = typer.Option(_S.temperature, "--temperature", help="Logits / this."),
    top_k: int = typer.Option(_S.top_k, "--top-k", help="Keep the k most probable (0: all)."),
    top_p: float = typer.Option(_S.top_p, "--top-p", help="Nucleus mass to keep (1: all)."),
    greedy: bool = typer.Option(_S.greedy, "--greedy", help="Always take the argmax."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    no_seed: bool = typer.Option(False, "--no-seed", help="A fresh random seed each time."),
    allow_unk: bool = typer.Option(_S.allow_unk, "--allow-unk", help="Let <unk> be sampled."),
    stop_at_eos: bool = typer.Option(_S.stop_at_eos, help="End a continuation at <eos>."),
) -> None:
    """Sample text from a trained language model, streamed token by token."""
    from rnnkit.common import config as cfg
    from rnnkit.tasks.lm import api as lm

    with boundary():
        flags = {  # field: (its flag, the value given)
            "prime": ("--prime", prime),
            "max_tokens": ("--max-tokens", max_tokens),
            "num_samples": ("--num-samples", num_samples),
            "temperature": ("--temperature", temperature),
            "top_k": ("--top-k", top_k),
            "top_p": ("--top-p", top_p),
            "greedy": ("--greedy", greedy),
            "seed": ("--seed", None if no_seed else seed),
            "allow_unk": ("--allow-unk", allow_unk),
            "stop_at_eos": ("--stop-at-eos", stop_at_eos),
        }
        config = SampleConfig(
            **{name: cfg.coerce(_S, name, value, flag) for name, (flag, value) in flags.items()}
        )
        model, tokenizer, _ = lm.load(checkpoint)
        _stream_samples(model, tokenizer, config)
