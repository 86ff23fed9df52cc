"""Starting a task model from a trained word language model (rnnkit.tasks.classify.pretrained):
which tensors come over, which stay, the errors for models that do not fit, and the
classifier's `--data.pretrained_lm` end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data.tokenizers import PAD_ID, WordTokenizer
from rnnkit.nn.factory import recurrent_layer
from rnnkit.tasks.classify import api as classify
from rnnkit.tasks.classify.pretrained import init_from_language_model
from rnnkit.tasks.lm import api as lm

TEXT = "the film is good .\nthe film is dull .\na good story\na dull story\n" * 20


pytestmark = pytest.mark.usefixtures("one_thread")


def train_lm(tmp_path: Path, name: str, *extra: str) -> Path:
    text = tmp_path / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    sections = lm.configure(
        overrides=(
            "--data.text",
            str(text),
            "--data.tokenizer",
            "word",
            "--model.cell",
            "gru",
            "--model.hidden_size",
            "6",
            "--model.embedding_size",
            "4",
            "--model.num_layers",
            "2",
            "--data.batch_size",
            "2",
            "--data.bptt",
            "5",
            "--trainer.max_steps",
            "3",
            "--trainer.progress",
            "false",
            "--trainer.out",
            str(tmp_path / name),
            *extra,
        )
    )
    return lm.train(sections, log=str).out_dir


def task_tokenizer() -> WordTokenizer:
    # "boring" is not in the language model's vocabulary; "<unk>" is in both.
    return WordTokenizer(["<pad>", "<unk>", "<bos>", "<eos>", "film", "boring", "good"])


def test_forward_and_backward_directions_and_the_words_they_share(tmp_path):
    forward, backward = train_lm(tmp_path, "fwd"), train_lm(tmp_path, "bwd", "--trainer.seed", "1")
    source, lm_tokenizer, _ = lm.load(forward)
    tokenizer = task_tokenizer()
    embedding = torch.nn.Embedding(tokenizer.vocab_size, 4, padding_idx=0)
    before = embedding.weight.detach().clone()
    rnn = recurrent_layer("gru", 4, 6, 2, bidirectional=True)
    reverse_before = rnn.weight_hh_l0_reverse.detach().clone()

    transfer = init_from_language_model(embedding, rnn, tokenizer, forward)
    assert transfer.layers == [0]  # layer 1 of a bidirectional stack reads 2 x 6 inputs
    assert transfer.words == tokenizer.vocab_size - 2  # all but <pad> and "boring"
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        assert torch.equal(getattr(rnn, name), getattr(source.rnn, name))
    assert torch.equal(rnn.weight_hh_l0_reverse, reverse_before)
    for word in ("film", "good", "<unk>"):
        row = source.embedding.weight[lm_tokenizer.id_of(word)]
        assert torch.equal(embedding.weight[tokenizer.id_of(word)], row)
    boring = tokenizer.id_of("boring")
    assert torch.equal(embedding.weight[boring], before[boring])
    assert not embedding.weight[PAD_ID].any()

    reverse = init_from_language_model(None, rnn, tokenizer, backward, reverse=True)
    assert reverse.layers == [0] and reverse.words is None
    assert torch.equal(rnn.weight_hh_l0_reverse, lm.load(backward)[0].rnn.weight_hh_l0)
    assert torch.equal(rnn.weight_hh_l0, source.rnn.weight_hh_l0)
    assert "backward direction of layer(s) 0" in reverse.describe(backward, "backward")


def test_a_one_direction_stack_takes_every_layer_it_can(tmp_path):
    path = train_lm(tmp_path, "fwd")
    source = lm.load(path)[0]
    rnn = recurrent_layer("gru", 4, 6, 3)
    transfer = init_from_language_model(None, rnn, task_tokenizer(), path)
    assert transfer.layers == [0, 1]  # the language model has two
    assert torch.equal(rnn.weight_ih_l1, source.rnn.weight_ih_l1)


@pytest.mark.parametrize(
    ("layer", "reverse", "message"),
    [
        (("lstm", 4, 6), False, "has cell 'gru'; the model's is 'lstm'"),
        (("gru", 4, 7), False, "has hidden size 6; the model's is 7"),
        (("gru", 5, 6), False, "has embeddings of width 4; the model reads 5"),
        (("gru", 4, 6), True, "is for the backward direction, but the layer has one direction"),
    ],
)
def test_models_that_do_not_fit_are_refused(tmp_path, layer, reverse, message):
    path = train_lm(tmp_path, "fwd")
    with pytest.raises(ValueError, match=message):
        init_from_language_model(
            None, recurrent_layer(*layer), task_tokenizer(), path, reverse=reverse
        )


def test_a_character_language_model_is_refused(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    run = lm.train(
        lm.configure(
            overrides=(
                "--data.text",
                str(text),
                "--model.hidden_size",
                "6",
                "--model.embedding_size",
                "4",
                "--data.batch_size",
                "2",
                "--data.bptt",
                "5",
                "--trainer.max_steps",
                "1",
                "--trainer.progress",
                "false",
                "--trainer.out",
                str(tmp_path / "chars"),
            )
        ),
        log=str,
    )
    with pytest.raises(ValueError, match="has a char tokenizer; a word one is needed"):
        init_from_language_model(None, recurrent_layer("lstm", 4, 6), task_tokenizer(), run.out_dir)


def test_classifier_starts_from_a_language_model(tmp_path):
    forward, backward = train_lm(tmp_path, "fwd"), train_lm(tmp_path, "bwd", "--trainer.seed", "1")
    data = tmp_path / "train.txt"
    data.write_text("pos a good film\nneg a dull film\n" * 4, encoding="utf-8")
    out = tmp_path / "run"
    args = [
        "train",
        "classify",
        "--train",
        str(data),
        "--valid",
        str(data),
        "--model.cell",
        "gru",
        "--model.hidden_size",
        "6",
        "--model.embedding_size",
        "4",
        "--data.pretrained_lm",
        str(forward),
        "--data.pretrained_lm_reverse",
        str(backward),
        "--trainer.max_steps",
        "1",
        "--trainer.progress",
        "false",
        "--trainer.out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # a, dull, film, good and three specials; <pad> stays zero
    assert "forward direction of layer(s) 0; embeddings of 7 of 8 words" in result.output
    assert "backward direction of layer(s) 0" in result.output
    model, tokenizer, _ = classify.load(out)
    assert tokenizer.vocab_size == 8
    assert model.rnn.weight_hh_l0.shape == (18, 6)

    result = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "run2"), "--model.cell", "lstm"])
    assert result.exit_code == 2
    assert "has cell 'gru'; the model's is 'lstm'" in result.output
