"""The cell variants and regularisers reach every task's model from its config
(``rnnkit.common.variants``): ``--model.proj_size`` sizes each model's heads, bridges and
exported states by the projected h, combinations a cell lacks are refused with a line
naming the flags, and embedding dropout drops whole words in training only."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import torch

from rnnkit.common.config import ConfigError, help_table, resolve
from rnnkit.nn.embedding_dropout import embedding_dropout
from rnnkit.tasks.classify.config import ClassifySettings
from rnnkit.tasks.classify.model import Classifier
from rnnkit.tasks.forecast.config import ForecastSettings
from rnnkit.tasks.forecast.model import Forecaster
from rnnkit.tasks.lm.config import LMSettings
from rnnkit.tasks.lm.model import LanguageModel
from rnnkit.tasks.music.config import MusicSettings
from rnnkit.tasks.music.model import MusicModel
from rnnkit.tasks.seq2seq.config import Seq2SeqSettings
from rnnkit.tasks.seq2seq.model import Seq2Seq
from rnnkit.tasks.tag.config import TagSettings
from rnnkit.tasks.tag.model import Tagger

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["--model.hidden_size", "8"]


def _lm(model_c: Any) -> tuple[torch.nn.Module, Callable[[torch.nn.Module], torch.Tensor]]:
    model = LanguageModel(model_c, 11)
    ids = torch.randint(0, 11, (5, 3))
    return model, lambda m: m.loss(ids, ids)[0]


def _classify(model_c: Any):
    model = Classifier(model_c, 12, 3)
    ids, lengths = torch.randint(1, 12, (3, 6)), torch.tensor([6, 2, 4])
    return model, lambda m: m(ids, lengths).square().mean()


def _tag(model_c: Any):
    model = Tagger(model_c, 12, 9, 4)
    words, lengths = torch.randint(1, 12, (2, 5)), torch.tensor([5, 3])
    chars, tags = torch.randint(1, 9, (2, 5, 4)), torch.randint(0, 4, (2, 5))
    return model, lambda m: m.loss(words, chars, lengths, tags)


def _seq2seq(model_c: Any):
    model = Seq2Seq(model_c, 12, 10)
    src, lengths = torch.randint(4, 12, (2, 5)), torch.tensor([5, 3])
    target = torch.randint(4, 10, (2, 4))
    return model, lambda m: m.loss(src, lengths, target, torch.tensor([4, 4]))[0]


def _music(model_c: Any):
    model = MusicModel(model_c)
    rolls = (torch.rand(6, 2, model_c.high - model_c.low + 1) < 0.3).float()
    return model, lambda m: m(rolls)[0].square().mean()


def _forecast(model_c: Any):
    model, inputs = Forecaster(model_c, 2), torch.randn(3, model_c.window, 2)
    return model, lambda m: m(inputs)[0].square().mean()


TASKS: dict[str, tuple[Any, Callable, str, list[str]]] = {
    "lm": (LMSettings, _lm, "rnn", ["--model.embedding_size", "6"]),
    "classify": (ClassifySettings, _classify, "rnn", ["--model.embedding_size", "6"]),
    "tag": (
        TagSettings,
        _tag,
        "rnn",
        ["--model.embedding_size", "6", "--model.char_embedding_size", "3"],
    ),
    "seq2seq": (Seq2SeqSettings, _seq2seq, "encoder", ["--model.embedding_size", "6"]),
    "music": (MusicSettings, _music, "rnn", ["--model.low", "60", "--model.high", "71"]),
    "forecast": (ForecastSettings, _forecast, "rnn", ["--model.window", "6"]),
}


@pytest.mark.parametrize("task", TASKS)
def test_proj_size_reaches_every_task_model(task):
    """--model.cell lstm --model.proj_size 3 builds a projected stack whose output the
    task's head reads; the loss backpropagates to the projection."""
    settings_cls, build, attribute, extra = TASKS[task]
    args = ["--model.cell", "lstm", "--model.proj_size", "3", *SMALL, *extra]
    settings = resolve(settings_cls(), overrides=args)
    torch.manual_seed(0)
    model, loss = build(settings.model)
    rnn = getattr(model, attribute)
    assert rnn.proj_size == 3 and rnn.state_sizes == (3, 8)
    loss(model.train()).backward()
    projections = [p for n, p in rnn.named_parameters() if n.startswith("weight_hr")]
    assert projections and all(p.grad is not None and p.grad.abs().sum() > 0 for p in projections)


@pytest.mark.parametrize("task", TASKS)
def test_variant_flags_are_listed_after_the_task_fields(task):
    settings_cls = TASKS[task][0]
    lines = [line.split()[0] for line in help_table(settings_cls()).splitlines()[1:]]
    model_flags = [f for f in lines if f.startswith("--model.")]
    assert model_flags[0] == "--model.cell"
    for flag in ("proj_size", "recurrent_dropout", "weight_drop", "zoneout", "locked_dropout"):
        assert f"--model.{flag}" in model_flags
    assert model_flags.index("--model.proj_size") > model_flags.index("--model.hidden_size")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.cell", "gru", "--model.proj_size", "4"], "--model.proj_size needs --model.cell"),
        (["--model.cell", "lstm", "--model.proj_size", "8"], "below --model.hidden_size (8)"),
        (["--model.cell", "gru", "--model.zoneout_cell", "0.1"], "--model.zoneout_cell needs"),
        (["--model.zoneout", "1.0"], "--model.zoneout"),
        (["--model.recurrent_dropout", "-0.1"], "--model.recurrent_dropout"),
    ],
)
def test_bad_variant_flags_are_refused_before_any_work(args, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve(ClassifySettings(), overrides=[*SMALL, *args])


def test_tied_weights_follow_the_projection():
    base = ["--model.cell", "lstm", "--model.tie_weights", "true", "--model.hidden_size", "16"]
    with pytest.raises(ConfigError, match=r"--model.embedding_size == --model.proj_size"):
        resolve(LMSettings(), overrides=[*base, "--model.proj_size", "8"])
    settings = resolve(
        LMSettings(), overrides=[*base, "--model.proj_size", "8", "--model.embedding_size", "8"]
    )
    model = LanguageModel(settings.model, 11)
    assert model.decoder.weight is model.embedding.weight and model.decoder.in_features == 8


def test_embedding_dropout_drops_whole_words_in_training_only():
    torch.manual_seed(0)
    table = torch.nn.Embedding(50, 4)
    ids = torch.arange(50).repeat(3)  # every word three times
    assert torch.equal(embedding_dropout(table, ids, 0.5, training=False), table(ids))
    out = embedding_dropout(table, ids, 0.5, training=True).reshape(3, 50, 4)
    dropped = (out == 0).all(dim=2)  # [3, 50]
    assert torch.equal(dropped[0], dropped[1]) and torch.equal(dropped[0], dropped[2])
    assert 5 < int(dropped[0].sum()) < 45  # a Bernoulli(0.5) mask over 50 words
    kept = ~dropped[0]
    torch.testing.assert_close(out[0][kept], 2.0 * table.weight[kept])  # 1 / (1 - p)
    torch.manual_seed(1)
    again = embedding_dropout(table, ids, 0.5, training=True)
    torch.manual_seed(1)
    assert torch.equal(again, embedding_dropout(table, ids, 0.5, training=True))


@pytest.mark.parametrize("task", ["lm", "classify", "tag", "seq2seq"])
def test_embedding_dropout_flag_changes_training_not_evaluation(task):
    settings_cls, build, _, extra = TASKS[task]
    args = [*SMALL, *extra, "--model.dropout", "0", "--model.embedding_dropout", "0.5"]
    torch.manual_seed(0)
    model, loss = build(resolve(settings_cls(), overrides=args).model)
    plain_c = resolve(settings_cls(), overrides=[*SMALL, *extra, "--model.dropout", "0"]).model
    plain = build(plain_c)[0]
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        model.eval(), plain.eval()
        assert torch.equal(loss(model), loss(plain))
        model.train(), plain.train()
        torch.manual_seed(3)
        noisy = loss(model)
        torch.manual_seed(3)
        assert not torch.equal(noisy, loss(plain))


@pytest.mark.parametrize("task", TASKS)
def test_regulariser_flags_reach_every_task_models_stack(task):
    """--model.recurrent_dropout, weight_drop, zoneout (zoneout_cell: the LSTM's c) and
    locked_dropout (the task's dropout, per sequence, moved into the stack) set the
    layer's arguments; the model trains with them and is deterministic in evaluation."""
    settings_cls, build, attribute, extra = TASKS[task]
    layers = "--model.encoder_layers" if task == "seq2seq" else "--model.num_layers"
    args = [*SMALL, *extra, "--model.cell", "lstm", layers, "2"]
    args += ["--model.recurrent_dropout", "0.2", "--model.weight_drop", "0.1"]
    args += ["--model.zoneout", "0.1", "--model.zoneout_cell", "0.3"]
    args += ["--model.dropout", "0.25", "--model.locked_dropout", "true"]
    settings = resolve(settings_cls(), overrides=args)
    torch.manual_seed(0)
    model, loss = build(settings.model)
    rnn = getattr(model, attribute)
    assert (rnn.recurrent_dropout, rnn.weight_drop, rnn.zoneout) == (0.2, 0.1, (0.1, 0.3))
    assert (rnn.variational_dropout, rnn.dropout) == (0.25, 0.0)
    loss(model.train()).backward()
    assert all(p.grad is not None for p in rnn.parameters())
    with torch.no_grad():
        model.eval()
        assert torch.equal(loss(model), loss(model))


def test_the_torch_free_cell_lists_match_the_cell_records():
    """What configs check without torch (``common.names``) is what the records and the
    factory do: the cells with a memory c, and the cells a projection builds for."""
    from rnnkit.common.names import CELL_NAMES, CELLS_WITH_MEMORY, PROJECTABLE_CELLS
    from rnnkit.nn.cells import CELLS
    from rnnkit.nn.factory import recurrent_layer

    assert CELL_NAMES == tuple(CELLS)
    assert CELLS_WITH_MEMORY == tuple(n for n, c in CELLS.items() if c.num_states == 2)
    projectable = []
    for name in CELL_NAMES:
        try:
            if recurrent_layer(name, 4, 8, proj_size=3).proj_size == 3:
                projectable.append(name)
        except ValueError:
            pass
    assert tuple(projectable) == PROJECTABLE_CELLS
