"""ONNX export (``rnnkit.export.onnx``, the task adapters, ``rnnkit export``) against
ONNX Runtime as the oracle: every cell and GRU form, 1-2 layers, one or two directions,
with and without an initial state and variable lengths (a zero length included),
batch-first and time-major, run at two (T, B) on one exported file, and the same for the
LSTM with proj_size (composed with Scan); the task models'
outputs; the language model's greedy text through ONNX Runtime against `rnnkit sample
--greedy`; and the CLI. fp32 within 1e-5 relative plus 1e-6 absolute.

The full layer matrix is slow (its own CI step: python -m pytest -m slow tests/test_onnx.py);
the default run checks each cell with every feature on and with none.
"""

from __future__ import annotations

import itertools
import json
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.nn.factory import recurrent_layer

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from rnnkit.export import onnx as export  # noqa: E402  (after the skip: needs onnx)

pytestmark = pytest.mark.usefixtures("one_thread")

RTOL, ATOL = 1e-5, 1e-6
CELLS = ("rnn_tanh", "rnn_relu", "gru", "gru_reset_before", "lstm")
D, H = 4, 6
SIZES = ((5, 3), (8, 2))  # (T, B): two shapes through one exported file


def session(model) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def assert_close(actual, expected, what: str, atol: float = ATOL) -> None:
    e = expected.detach().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
    a = np.asarray(actual)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != expected {e.shape}"
    excess = np.abs(a - e) - (atol + RTOL * np.abs(e))
    assert (excess <= 0).all(), (
        f"{what}: |ort - rnnkit| up to {np.abs(a - e).max():.3e} (relative tolerance {RTOL}, "
        f"absolute {atol})"
    )


# --- the layers -------------------------------------------------------------------------


def _layer_case(cell, layers, bidirectional, initial, lengths, batch_first, proj_size=0):
    torch.manual_seed(hash((cell, layers, bidirectional)) % 1000)
    layer = recurrent_layer(
        cell,
        D,
        H,
        layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        dropout=0.3,
        proj_size=proj_size,
    ).eval()  # dropout between layers: the identity in an export
    dirs = 2 if bidirectional else 1
    states = ("h0", "c0") if cell == "lstm" else ("h0",)
    sizes = (proj_size or H, H)  # h's and c's

    def draw(T, B):
        x = torch.randn(B, T, D) if batch_first else torch.randn(T, B, D)
        hx = None
        if initial:
            hx = tuple(torch.randn(layers * dirs, B, n) for n in sizes[: len(states)])
        lens = None
        if lengths:
            lens = torch.randint(0, T + 1, (B,))
            lens[0], lens[-1] = T, 0  # a full row and an empty one
        return x, hx, lens

    x, hx, lens = draw(*SIZES[0])
    example = {"input": x, "hx": None if hx is None else (hx if cell == "lstm" else hx[0])}
    example["lengths"] = lens
    model = export.onnx_model(layer, example)
    ops = {n.op_type for n in model.graph.node}
    if proj_size:  # composed: one Scan per layer-direction, no ONNX LSTM node
        assert "LSTM" not in ops
        assert sum(n.op_type == "Scan" for n in model.graph.node) == layers * dirs
    else:
        assert "Scan" not in ops
    s = session(model)
    assert [i.name for i in s.get_inputs()] == (
        ["input"] + (list(states) if initial else []) + (["lengths"] if lengths else [])
    )
    for T, B in SIZES:
        x, hx, lens = draw(T, B)
        feed = {"input": x.numpy()}
        if hx is not None:
            feed |= {name: h.numpy() for name, h in zip(states, hx, strict=True)}
        if lens is not None:
            feed["lengths"] = lens.to(torch.int32).numpy()
        with torch.no_grad():
            out, final = layer(
                x, None if hx is None else (hx if cell == "lstm" else hx[0]), lengths=lens
            )
        finals = final if isinstance(final, tuple) else (final,)
        got = s.run(None, feed)
        for name, a, e in zip(("output", "h_n", "c_n"), got, (out, *finals), strict=False):
            assert_close(a, e, f"{name} at T={T}, B={B}")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("everything", [True, False], ids=["all-features", "plain"])
def test_layer_matches_onnxruntime(cell, everything):
    _layer_case(cell, 2 if everything else 1, everything, everything, everything, everything)


MATRIX = list(itertools.product(CELLS, (1, 2), *([(False, True)] * 4)))


@pytest.mark.slow
@pytest.mark.parametrize(
    "cell, layers, bidirectional, initial, lengths, batch_first",
    MATRIX,
    ids=[
        f"{c}-L{n}-{'bi' if b else 'uni'}-{'h0' if i else 'noh0'}-{'lengths' if ln else 'full'}"
        f"-{'bf' if bf else 'tf'}"
        for c, n, b, i, ln, bf in MATRIX
    ],
)
def test_layer_matrix_matches_onnxruntime(
    cell, layers, bidirectional, initial, lengths, batch_first
):
    _layer_case(cell, layers, bidirectional, initial, lengths, batch_first)


P = 3  # an LSTM's proj_size (< H): composed with Scan, ONNX's LSTM has no projection


@pytest.mark.parametrize("everything", [True, False], ids=["all-features", "plain"])
def test_projected_lstm_matches_onnxruntime(everything):
    _layer_case("lstm", 2 if everything else 1, *[everything] * 4, proj_size=P)


PROJ_MATRIX = list(itertools.product((1, 2), *([(False, True)] * 4)))


@pytest.mark.slow
@pytest.mark.parametrize(
    "layers, bidirectional, initial, lengths, batch_first",
    PROJ_MATRIX,
    ids=[
        f"lstm-P{P}-L{n}-{'bi' if b else 'uni'}-{'h0' if i else 'noh0'}"
        f"-{'lengths' if ln else 'full'}-{'bf' if bf else 'tf'}"
        for n, b, i, ln, bf in PROJ_MATRIX
    ],
)
def test_projected_lstm_matrix_matches_onnxruntime(
    layers, bidirectional, initial, lengths, batch_first
):
    _layer_case("lstm", layers, bidirectional, initial, lengths, batch_first, proj_size=P)


def test_gru_forms_export_their_own_operator_attribute():
    for reset_after, expected in ((True, 1), (False, 0)):
        model = export.onnx_model(rnnkit_gru(reset_after))
        (node,) = [n for n in model.graph.node if n.op_type == "GRU"]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["linear_before_reset"] == expected


def rnnkit_gru(reset_after: bool):
    import rnnkit

    return rnnkit.GRU(D, H, reset_after=reset_after)


def test_bad_modules_and_examples_are_refused():
    import rnnkit

    with pytest.raises(export.ExportError, match="float32"):
        export.onnx_model(rnnkit.LSTM(D, H, dtype=torch.float64))
    with pytest.raises(export.ExportError, match="batched example"):
        export.onnx_model(rnnkit.GRU(D, H), torch.randn(5, D))
    with pytest.raises(export.ExportError, match="keys"):
        export.onnx_model(rnnkit.GRU(D, H), {"input": torch.randn(5, 2, D), "h": None})
    with pytest.raises(export.ExportError, match="cannot export a Linear"):
        export.onnx_model(torch.nn.Linear(3, 4))
    with pytest.raises(ValueError, match="features"):  # the layer's own check
        export.onnx_model(rnnkit.GRU(D, H), torch.randn(5, 2, D + 1))


def test_to_onnx_writes_a_new_file_atomically(tmp_path):
    import rnnkit

    layer = rnnkit.RNN(D, H)
    path = export.to_onnx(layer, torch.randn(3, 2, D), tmp_path / "rnn.onnx")
    assert onnx.load(str(path)).graph.node
    with pytest.raises(FileExistsError, match="force=True"):
        export.to_onnx(layer, None, path)
    export.to_onnx(rnnkit.RNN(D, H, nonlinearity="relu"), None, path, force=True)
    assert any(n.op_type == "RNN" for n in onnx.load(str(path)).graph.node)
    with pytest.raises(OSError, match="folder"):
        export.to_onnx(layer, None, tmp_path, force=True)
    (tmp_path / "link.onnx").symlink_to(path)
    with pytest.raises(OSError, match="symbolic link"):
        export.to_onnx(layer, None, tmp_path / "link.onnx", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.onnx", "rnn.onnx"]


def test_importing_rnnkit_export_loads_neither_torch_nor_onnx():
    import subprocess

    code = "import sys, rnnkit.export; sys.exit('torch' in sys.modules or 'onnx' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_missing_onnx_is_one_clear_error(monkeypatch):
    import rnnkit
    from rnnkit.common.checks import MissingExtra

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    with pytest.raises(MissingExtra, match=r"pip install 'rnnkit\[export\]'"):
        export.onnx_model(rnnkit.GRU(D, H))


# --- the task models -----------------------------------------------------------------


def test_lm_step_model_matches_the_model():
    from rnnkit.tasks.lm.config import LMConfig
    from rnnkit.tasks.lm.export import LMStep
    from rnnkit.tasks.lm.model import LanguageModel

    cases = [
        {"cell": "lstm"},
        {"cell": "gru_reset_before", "input": "onehot"},
        {"cell": "gru", "tie_weights": True, "embedding_size": 16},
    ]
    for case in cases:
        config = LMConfig(**({"num_layers": 2, "hidden_size": 16, "embedding_size": 8} | case))
        step = LMStep(LanguageModel(config, 20).eval())
        model = export.onnx_model(step.model)  # found through the task's adapter
        if case.get("tie_weights"):  # the tied matrix is stored once
            shapes = [tuple(i.dims) for i in model.graph.initializer]
            assert shapes.count((20, 16)) == 1
        s = session(model)
        for B in (1, 3):
            ids = torch.randint(0, 20, (B,))
            states = [torch.randn(2, B, 16) for _ in step.state_names]
            with torch.no_grad():
                expected = step(ids, *states)
            feed = {"ids": ids.numpy()} | {
                n: t.numpy() for n, t in zip(step.state_names, states, strict=True)
            }
            for name, a, e in zip(
                ("logits", "h_n", "c_n"), s.run(None, feed), expected, strict=False
            ):
                assert_close(a, e, f"{case} {name} at B={B}")


@pytest.mark.parametrize("pooling", ["final", "mean", "max", "attention"])
def test_classifier_matches_the_model(pooling):
    from rnnkit.tasks.classify.config import ClassifierConfig
    from rnnkit.tasks.classify.model import Classifier

    for cell, bidirectional in (("lstm", True), ("gru_reset_before", False)):
        config = ClassifierConfig(
            cell=cell,
            num_layers=2,
            hidden_size=8,
            embedding_size=6,
            bidirectional=bidirectional,
            pooling=pooling,
        )
        model = Classifier(config, 30, 4).eval()
        s = session(export.onnx_model(model))
        for B, T in ((3, 5), (4, 9)):
            ids = torch.randint(1, 30, (B, T))
            lengths = torch.randint(1, T + 1, (B,))
            lengths[0] = T
            ids[torch.arange(T)[None] >= lengths[:, None]] = 0
            with torch.no_grad():
                expected = model(ids, lengths)
            (logits,) = s.run(None, {"ids": ids.numpy(), "lengths": lengths.numpy()})
            assert_close(logits, expected, f"{cell} {pooling} B={B} T={T}")


@pytest.mark.parametrize("output", ["crf", "softmax"])
@pytest.mark.parametrize("chars", [5, 0], ids=["chars", "words-only"])
def test_tagger_matches_the_model_and_its_viterbi(output, chars):
    from rnnkit.tasks.tag.config import TaggerConfig
    from rnnkit.tasks.tag.export import TaggerExport, viterbi
    from rnnkit.tasks.tag.model import Tagger
    from rnnkit.tasks.tag.schemes import allowed_transitions

    tags = ["O", "B-PER", "I-PER", "E-PER", "S-PER"]
    config = TaggerConfig(
        hidden_size=8,
        embedding_size=6,
        char_embedding_size=chars,
        char_hidden_size=4,
        output=output,
        num_layers=2,
    )
    model = Tagger(config, 30, 20, len(tags), allowed_transitions(tags, "BIOES")).eval()
    if model.crf is not None:
        with torch.no_grad():
            for p in model.crf.parameters():
                p.normal_()
    adapter = TaggerExport(model)
    s = session(export.onnx_model(adapter))
    for B, T, W in ((3, 5, 4), (2, 7, 6)):
        words = torch.randint(1, 30, (B, T))
        lengths = torch.randint(1, T + 1, (B,))
        lengths[0] = T
        padding = torch.arange(T)[None] >= lengths[:, None]
        words[padding] = 0
        letters = torch.randint(1, 20, (B, T, W))
        letters[torch.arange(W)[None, None] >= torch.randint(1, W + 1, (B, T))[..., None]] = 0
        letters[padding] = 0  # a padding word has no characters
        feed = {"words": words.numpy(), "lengths": lengths.numpy()}
        if chars:
            feed["chars"] = letters.numpy()
        with torch.no_grad():
            expected = adapter(words, letters if chars else None, lengths)
        got = s.run(None, feed)
        assert len(got) == len(expected) == (4 if output == "crf" else 1)
        for name, a, e in zip(
            ("emissions", "transitions", "start", "end"), got, expected, strict=False
        ):
            assert_close(a, e, f"{name} B={B}")
        if model.crf is not None:
            decoded = model.decode(words, letters if chars else None, lengths)
            ours = [viterbi(got[0][b], *got[1:], int(lengths[b])) for b in range(B)]
            assert ours == decoded


@pytest.mark.parametrize("strategy", ["direct", "recursive"])
@pytest.mark.parametrize("gaussian", [False, True], ids=["point", "gaussian"])
def test_forecaster_matches_model_forecast(strategy, gaussian):
    from rnnkit.tasks.forecast.api import model_forecast
    from rnnkit.tasks.forecast.config import ForecasterConfig
    from rnnkit.tasks.forecast.export import ForecastExport
    from rnnkit.tasks.forecast.model import Forecaster
    from rnnkit.tasks.forecast.series import Scaler

    rng = np.random.default_rng(0)
    values = np.cumsum(rng.standard_normal((40, 2)), 0) * 3 + 10  # [N, V], series units
    scaler = Scaler.fit(values[:30])
    config = ForecasterConfig(
        cell="lstm",
        hidden_size=8,
        num_layers=2,
        window=6,
        horizon=4,
        strategy=strategy,
        gaussian=gaussian,
    )
    model = Forecaster(config, 2).eval()
    origins = np.arange(8, 37)
    for difference in (False, True):
        s = session(export.onnx_model(ForecastExport(model, scaler, difference)))
        mean, std = model_forecast(model, scaler, values, origins, None, difference)
        L = config.window + difference
        x = np.stack([values[o - L : o] for o in origins]).astype(np.float32)
        got = s.run(None, {"values": x})
        assert len(got) == (2 if gaussian else 1)
        scale = float(np.abs(mean).max())  # float32 in the graph, float64 in model_forecast
        assert_close(got[0], mean, f"mean, difference={difference}", atol=1e-6 * scale)
        if gaussian:
            assert_close(got[1], std, f"std, difference={difference}", atol=1e-6 * scale)
    scaled = session(export.onnx_model(model))  # the adapter without a scaler
    x = torch.randn(3, config.window, 2)
    expected = model.forecast(x)
    for a, e in zip(scaled.run(None, {"values": x.numpy()}), expected, strict=False):
        assert_close(a, e, "scaled units")


def test_music_step_model_matches_the_model():
    from rnnkit.tasks.music.config import MusicConfig
    from rnnkit.tasks.music.export import MusicStep
    from rnnkit.tasks.music.model import MusicModel

    step = MusicStep(
        MusicModel(MusicConfig(cell="lstm", hidden_size=8, num_layers=2, low=60, high=71)).eval()
    )
    s = session(export.onnx_model(step))
    frame = (torch.rand(3, 12) < 0.3).float()
    states = [torch.randn(2, 3, 8) for _ in step.state_names]
    with torch.no_grad():
        expected = step(frame, *states)
    feed = {"frame": frame.numpy()} | {
        n: t.numpy() for n, t in zip(step.state_names, states, strict=True)
    }
    for name, a, e in zip(("logits", "h_n", "c_n"), s.run(None, feed), expected, strict=True):
        assert_close(a, e, name)


def ort_greedy_translation(encoder, decoder, source, lengths, max_length):
    """Greedy decoding through the exported encoder and decoder step, as
    ``rnnkit.decoding.beam.greedy`` does it (<pad> and <bos> never emitted); and the
    smallest margin between the best and the second-best token on the way."""
    from rnnkit.data.tokenizers import BOS_ID, EOS_ID, PAD_ID

    encoded = dict(zip([o.name for o in encoder.get_outputs()], encoder.run(None, {
        "source": source, "lengths": lengths}), strict=True))  # fmt: skip
    names = [i.name for i in decoder.get_inputs()][1:-3]  # the state
    state = {n: encoded[n] for n in names}
    memory = {"memory": encoded["memory"], "keys": encoded["keys"], "lengths": lengths}
    previous = np.full(len(source), BOS_ID)
    rows, done, margin = [], np.zeros(len(source), bool), np.inf
    for _ in range(max_length):
        logits, *new, _ = decoder.run(None, {"previous": previous} | state | memory)
        logits[:, [PAD_ID, BOS_ID]] = -np.inf
        top2 = np.sort(logits, axis=1)[:, -2:]
        margin = min(margin, float((top2[~done, 1] - top2[~done, 0]).min()))
        previous = logits.argmax(1)
        rows.append(previous)
        state = dict(zip(names, new, strict=True))
        done |= previous == EOS_ID
        if done.all():
            break
    out = []
    for seq in np.stack(rows, 1).tolist():
        out.append(seq[: seq.index(EOS_ID)] if EOS_ID in seq else seq)
    return out, margin


@pytest.mark.parametrize(
    "cell, attention, bidirectional, layers",
    [("lstm", "bahdanau", True, (2, 3)), ("gru_reset_before", "luong", False, (1, 1))],
)
def test_seq2seq_encoder_and_decoder_step_match_the_model(cell, attention, bidirectional, layers):
    from rnnkit.decoding.beam import decode
    from rnnkit.tasks.seq2seq.config import Seq2SeqConfig
    from rnnkit.tasks.seq2seq.export import Seq2SeqEncoder, Seq2SeqStep, state_names
    from rnnkit.tasks.seq2seq.model import Seq2Seq

    config = Seq2SeqConfig(
        cell=cell, attention=attention, bidirectional=bidirectional, encoder_layers=layers[0],
        decoder_layers=layers[1], hidden_size=8, embedding_size=6, attention_size=5,
    )  # fmt: skip
    model = Seq2Seq(config, 20, 15).eval()
    encoder_adapter, step_adapter = Seq2SeqEncoder(model), Seq2SeqStep(model)
    encoder, decoder = (
        session(export.onnx_model(encoder_adapter)),
        session(export.onnx_model(step_adapter)),
    )
    names = state_names(model)
    assert [o.name for o in encoder.get_outputs()] == ["memory", "keys", *names]
    for B, S in ((3, 6), (2, 9)):
        source = torch.randint(4, 20, (B, S))
        lengths = torch.randint(1, S + 1, (B,))
        lengths[0] = S
        source[torch.arange(S)[None] >= lengths[:, None]] = 0
        with torch.no_grad():
            expected = encoder_adapter(source, lengths)
        got = encoder.run(None, {"source": source.numpy(), "lengths": lengths.numpy()})
        for name, a, e in zip(["memory", "keys", *names], got, expected, strict=True):
            assert_close(a, e, f"encoder {name} B={B}")
        state = [torch.from_numpy(t) for t in got[2:]]  # two steps, fed back
        previous = torch.tensor([2] * B)
        memory, keys = (torch.from_numpy(t) for t in got[:2])
        for t in range(2):
            with torch.no_grad():
                expected = step_adapter(previous, *state, memory, keys, lengths)
            feed = {"previous": previous.numpy(), "memory": got[0], "keys": got[1]}
            feed |= {"lengths": lengths.numpy()} | {
                n: v.numpy() for n, v in zip(names, state, strict=True)
            }
            outs = decoder.run(None, feed)
            for name, a, e in zip(["logits", *names, "attention"], outs, expected, strict=True):
                assert_close(a, e, f"decoder {name} step {t} B={B}")
            previous = torch.from_numpy(outs[0]).argmax(1)
            state = [torch.from_numpy(v) for v in outs[1:-1]]
        ours, margin = ort_greedy_translation(encoder, decoder, source.numpy(),
            lengths.numpy(), 8)  # fmt: skip
        assert margin > 1e-4, f"a near-tie ({margin:.1e}) makes greedy decoding ill-posed"
        assert ours == [h.tokens for h in decode(model, source, lengths, 1, 8)]


# --- a trained language model, end to end ---------------------------------------------


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    from rnnkit.tasks.lm import api as lm

    root = tmp_path_factory.mktemp("onnx_lm")
    text = root / "input.txt"
    text.write_text(lm.default_corpus()[:3000], encoding="utf-8")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    result = invoke(
        "train", "lm", "--text", text, "--model.cell", "lstm", "--model.hidden_size", "24",
        "--model.num_layers", "2", "--model.embedding_size", "8", "--data.batch_size", "8",
        "--data.bptt", "16", "--trainer.epochs", "2", "--trainer.progress", "false",
        "--trainer.out", root / "run", "--samples", "0",
    )  # fmt: skip
    torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return root / "run"


def ort_greedy(s, tokenizer, prime: str, max_tokens: int) -> tuple[str, float]:
    """Greedy text from the exported step model, as `rnnkit sample --greedy` draws it
    (the prime a token at a time from zero states, specials masked); and the smallest
    margin between the best and the second-best logit on the way."""
    from rnnkit.decoding.sampling import encode_prime, special_mask

    L, _, H = s.get_inputs()[1].shape
    states = {i.name: np.zeros((L, 1, H), np.float32) for i in s.get_inputs()[1:]}
    mask = special_mask(tokenizer.vocab_size, False, True).numpy()
    ids, margin = [], np.inf
    for token in encode_prime(tokenizer, prime):
        logits, *new = s.run(None, {"ids": np.array([token])} | states)
        states = dict(zip(states, new, strict=True))
    for _ in range(max_tokens):
        scores = np.where(mask, -np.inf, logits[0])
        top2 = np.sort(scores)[-2:]
        margin = min(margin, float(top2[1] - top2[0]))
        ids.append(int(scores.argmax()))
        if ids[-1] == tokenizer.eos_id:
            break
        logits, *new = s.run(None, {"ids": np.array(ids[-1:])} | states)
        states = dict(zip(states, new, strict=True))
    return "".join(tokenizer.decode_stream(ids)), margin


def test_lm_greedy_text_through_onnxruntime_is_rnnkit_samples(lm_run, tmp_path):
    from rnnkit.data.tokenizers import tokenizer_from_dict

    out = tmp_path / "lm.onnx"
    result = invoke("export", lm_run, "--format", "onnx", "--out", out)
    assert result.exit_code == 0, result.output
    assert "input  ids: int64 [B]" in result.output and "output logits" in result.output
    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["rnnkit.task"] == "lm"
    tokenizer = tokenizer_from_dict(json.loads(meta["rnnkit.tokenizer"]))
    s = session(model)
    for prime in ("The ", "def "):
        sampled = invoke("sample", lm_run, "--greedy", "--prime", prime, "--max-tokens", "60")
        assert sampled.exit_code == 0, sampled.output
        text, margin = ort_greedy(s, tokenizer, prime, 60)
        assert margin > 1e-3, f"a near-tie ({margin:.1e}) makes greedy text ill-posed"
        assert prime + text == sampled.output.rstrip("\n")


def test_lm_step_log_probabilities_along_a_text(lm_run):
    """The exported step model's log-probabilities of every next token of a text equal
    the model's over the whole text in one call."""
    from rnnkit.tasks.lm import api as lm
    from rnnkit.tasks.lm.export import from_run

    model, tokenizer, _ = lm.load(lm_run)
    s = session(export.onnx_model(from_run(lm_run)))
    ids = tokenizer.encode("The object of a class is called with self.")
    with torch.no_grad():
        logits, _ = model(torch.tensor(ids)[:, None])  # [T, 1, V]
    expected = torch.log_softmax(logits[:, 0], dim=1)
    states = {i.name: np.zeros((2, 1, 24), np.float32) for i in s.get_inputs()[1:]}
    got = []
    for token in ids:
        step_logits, *new = s.run(None, {"ids": np.array([token])} | states)
        states = dict(zip(states, new, strict=True))
        got.append(torch.log_softmax(torch.from_numpy(step_logits[0]), dim=0))
    assert_close(torch.stack(got).numpy(), expected, "log-probabilities", atol=1e-5)


def test_cli_export_refuses_overwrite_bad_format_and_missing_run(lm_run, tmp_path):
    out = tmp_path / "m.onnx"
    assert invoke("export", lm_run, "--out", out).exit_code == 0
    again = invoke("export", lm_run, "--out", out)
    assert again.exit_code == 2 and "exists; pass --force" in again.output
    assert invoke("export", lm_run, "--out", out, "--force").exit_code == 0
    bad = invoke("export", lm_run, "--out", tmp_path / "x.onnx", "--format", "tflite")
    assert (
        bad.exit_code == 2
        and "--format must be one of onnx, pretrained, got 'tflite'" in bad.output
    )
    missing = invoke("export", tmp_path / "nowhere", "--out", tmp_path / "y.onnx")
    assert missing.exit_code == 2 and "nowhere" in missing.output
    folder = invoke("export", lm_run, "--out", tmp_path)
    assert folder.exit_code == 2 and "is a folder" in folder.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_cli_export_pretrained_folder_loads_and_samples_as_the_run(lm_run, tmp_path):
    out = tmp_path / "lm-pretrained"
    result = invoke("export", lm_run, "--format", "pretrained", "--out", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (pretrained folder: lm model)" in result.output
    assert {"model.safetensors", "config.json"} <= {p.name for p in out.iterdir()}
    run_text = invoke("sample", lm_run, "--greedy", "--max-tokens", "30")
    folder_text = invoke("sample", out, "--greedy", "--max-tokens", "30")
    assert run_text.exit_code == 0 and folder_text.exit_code == 0, folder_text.output
    assert folder_text.output == run_text.output
    again = invoke("export", lm_run, "--format", "pretrained", "--out", out)
    assert again.exit_code == 2 and str(out) in again.output


def test_cli_export_without_onnx_is_one_line(lm_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    result = invoke("export", lm_run, "--out", tmp_path / "m.onnx")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: ONNX export needs the onnx package, which is not installed: "
        "pip install 'rnnkit[export]' (or pip install onnx)"
    ]


# --- every task's trained run through `rnnkit export` (slow: four tiny trainings) -----


def _train(task: str, root, *args) -> object:
    out = root / "run"
    common = ("--trainer.progress", "false", "--trainer.out", out)
    result = invoke("train", task, *args, *common)
    assert result.exit_code == 0, result.output
    exported = root / "model.onnx"
    result = invoke("export", out, "--out", exported)
    assert result.exit_code == 0, result.output
    model = onnx.load(str(exported))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["rnnkit.task"] == task
    return out, session(model), meta


@pytest.mark.slow
def test_classify_run_exports(tmp_path):
    from rnnkit.data.padded import pad
    from rnnkit.tasks.classify import api as classify

    lines = ["pos a great and funny film", "neg a dull and boring film", "pos great story"]
    data = tmp_path / "train.txt"
    data.write_text("\n".join(lines * 3) + "\n", encoding="utf-8")
    run, s, meta = _train(
        "classify", tmp_path, "--train", data, "--valid", data, "--trainer.epochs", "2",
        "--model.hidden_size", "8", "--model.embedding_size", "6", "--model.pooling",
        "attention",
    )  # fmt: skip
    texts = ["a great film", "boring and dull , a long story"]
    expected = classify.predict(run, texts)
    _, tokenizer, labels = classify.load(run)
    assert json.loads(meta["rnnkit.labels"]) == list(labels.names)
    ids, lengths = pad([tokenizer.encode(t) for t in texts])
    (logits,) = s.run(None, {"ids": ids.numpy(), "lengths": lengths.numpy()})
    probs = torch.softmax(torch.from_numpy(logits), dim=1)
    for p, e in zip(probs, expected, strict=True):
        assert_close(p.numpy(), [e["probabilities"][n] for n in labels.names], "probabilities")


@pytest.mark.slow
def test_tag_run_exports(tmp_path):
    from rnnkit.tasks.tag import api as tag
    from rnnkit.tasks.tag.export import viterbi

    data = tmp_path / "eng.train"
    data.write_text(
        "Peter NNP B-NP I-PER\nBlackburn NNP I-NP I-PER\nvisited VBD B-VP O\n"
        "Paris NNP B-NP I-LOC\n\nJohn NNP B-NP I-PER\nwent VBD B-VP O\nto TO B-PP O\n"
        "London NNP B-NP I-LOC\n",
        encoding="utf-8",
    )
    run, s, meta = _train(
        "tag", tmp_path, "--train", data, "--valid", data, "--trainer.epochs", "2",
        "--model.hidden_size", "8", "--data.batch_size", "2",
    )  # fmt: skip
    model, vocab = tag.load(run)
    assert json.loads(meta["rnnkit.tags"]) == list(vocab.tags)
    sentences = [["Peter", "went", "to", "Paris"], ["John", "visited", "London", "."]]
    words, chars, lengths = vocab.batch(sentences)
    feed = {"words": words.numpy(), "chars": chars.numpy(), "lengths": lengths.numpy()}
    emissions, *scores = s.run(None, feed)
    with torch.no_grad():
        assert_close(emissions, model.emissions(words, chars, lengths), "emissions")
    decoded = model.decode(words, chars, lengths)
    assert [viterbi(emissions[b], *scores, len(sentences[b])) for b in range(2)] == decoded


@pytest.mark.slow
def test_forecast_run_exports(tmp_path):
    from rnnkit.tasks.forecast import api as forecast

    t = np.arange(120)
    values = np.stack([10 + 3 * np.sin(2 * np.pi * t / 12) + 0.05 * t, np.cos(t / 2)], 1)
    csv = tmp_path / "s.csv"
    rows = [f"{i},{a:.6f},{b:.6f}" for i, (a, b) in enumerate(values)]
    csv.write_text("time,a,b\n" + "\n".join(rows) + "\n", encoding="utf-8")
    run, s, _ = _train(
        "forecast", tmp_path, "--csv", csv, "--trainer.epochs", "2", "--model.hidden_size",
        "8", "--model.window", "12", "--model.horizon", "3", "--model.gaussian", "true",
        "--data.difference", "true", "--data.season", "12",
    )  # fmt: skip
    expected = forecast.forecast_series(run, values)
    mean, std = s.run(None, {"values": values[None, -13:].astype(np.float32)})
    scale = float(np.abs(expected["mean"]).max())
    assert_close(mean[0], expected["mean"], "mean", atol=1e-6 * scale)
    assert_close(mean[0] + 1.96 * std[0], expected["high"], "high", atol=1e-6 * scale)


@pytest.mark.slow
def test_music_run_exports(tmp_path):
    from rnnkit.tasks.music import api as music
    from rnnkit.tasks.music.export import MusicStep

    chorales = [[[60 + (t * k) % 12, 67] for t in range(8)] for k in range(1, 7)]
    data = tmp_path / "chorales.json"
    data.write_text(json.dumps({"train": chorales[:4], "valid": chorales[4:]}), encoding="utf-8")
    run, s, meta = _train(
        "music", tmp_path, "--data", data, "--trainer.epochs", "2", "--model.hidden_size", "8"
    )
    step = MusicStep(music.load(run))
    P = int(meta["rnnkit.high"]) - int(meta["rnnkit.low"]) + 1
    frame = (torch.rand(2, P) < 0.1).float()
    states = [torch.randn(step.model.config.num_layers, 2, 8) for _ in step.state_names]
    with torch.no_grad():
        expected = step(frame, *states)
    feed = {"frame": frame.numpy()} | {
        n: t.numpy() for n, t in zip(step.state_names, states, strict=True)
    }
    for name, a, e in zip(("logits", "h_n", "c_n"), s.run(None, feed), expected, strict=False):
        assert_close(a, e, name)


def test_latency_script_runs(tmp_path):
    """scripts/onnx_latency.py (docs/export.md's figures) end to end, one tiny block."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = os.environ | {"PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1"}
    script = root / "scripts" / "onnx_latency.py"
    result = subprocess.run(
        [sys.executable, str(script), "--blocks", "1", "--calls", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.endswith("x)")]
    assert len(lines) == 6 and lines[0].startswith("LM step") and "classifier" in lines[-1]


@pytest.mark.slow
def test_seq2seq_run_exports(tmp_path):
    from rnnkit.data.padded import pad
    from rnnkit.tasks.seq2seq import api as seq2seq

    words = ["ab", "ba", "abc", "cab", "bca", "cc", "a", "bb", "acb", "cba"]
    data = tmp_path / "reverse.tsv"
    data.write_text("".join(f"{w}\t{w[::-1]}\n" for w in words), encoding="utf-8")
    out = tmp_path / "run"
    result = invoke(
        "train", "seq2seq", "--train", data, "--valid", data, "--trainer.epochs", "8",
        "--trainer.progress", "false", "--trainer.out", out, "--optim.lr", "0.02",
        "--model.hidden_size", "8", "--model.embedding_size", "6", "--model.attention_size", "6",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (tmp_path / "m.decoder.onnx").write_text("taken")
    refused = invoke("export", out, "--out", tmp_path / "m.onnx")
    assert refused.exit_code == 2 and "m.decoder.onnx' exists" in refused.output
    assert not (tmp_path / "m.encoder.onnx").exists()  # checked before any work
    result = invoke("export", out, "--out", tmp_path / "m.onnx", "--force")
    assert result.exit_code == 0, result.output
    assert "(encoder)" in result.output and "(decoder)" in result.output
    encoder = session(onnx.load(str(tmp_path / "m.encoder.onnx")))
    decoder = session(onnx.load(str(tmp_path / "m.decoder.onnx")))
    translator = seq2seq.load(out)
    texts = ["abc", "cab", "b"]
    source, lengths = pad([translator.tokenizers.source_ids(t) for t in texts])
    longest = translator.decode.max_length or 50  # as Translator.hypotheses
    ours, margin = ort_greedy_translation(
        encoder, decoder, source.numpy(), lengths.numpy(), longest
    )
    assert margin > 1e-4, f"a near-tie ({margin:.1e}) makes greedy decoding ill-posed"
    expected = [h.tokens for h in translator.hypotheses(texts, beam=1)]
    assert ours == expected
