"""Long-distance subject-verb agreement from a small grammar (the number-prediction
task of Linzen, Dupoux and Goldberg 2016): read a sentence prefix up to the main verb
and say whether the verb must be singular ("is") or plural ("are").

    S    -> "the" N_subj MOD^k           k uniform in 0 .. max_modifiers
    MOD  -> PP | ORC
    PP   -> P "the" N                    "near the dogs"           (3 words)
    ORC  -> "that" "the" N V_agr(N)      "that the dogs like"      (4 words)

Each N is a noun drawn with a random number; only the subject noun decides the label.
The modifiers put *attractors* between subject and verb: nouns of either number, and in
object relative clauses a verb that agrees with its own subject, not with the head
noun. No word after the subject carries the subject's number, so the model must keep it
over the whole distance. The distance is the number of words between the subject noun
and the verb (0 .. 4 * max_modifiers).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.synthetic.base import Batch, Problem, Rng, as_rng, positive

NOUNS = [
    ("cat", "cats"),
    ("dog", "dogs"),
    ("pilot", "pilots"),
    ("author", "authors"),
    ("farmer", "farmers"),
    ("teacher", "teachers"),
    ("king", "kings"),
    ("doctor", "doctors"),
]
VERBS = [
    ("likes", "like"),
    ("sees", "see"),
    ("knows", "know"),
    ("admires", "admire"),
    ("chases", "chase"),
]
PREPOSITIONS = ["near", "behind", "with"]
VOCAB = ["<pad>", "the", "that", *PREPOSITIONS] + [w for pair in NOUNS + VERBS for w in pair]
INDEX = {w: i for i, w in enumerate(VOCAB)}
SINGULAR, PLURAL = 0, 1
VERB_FORMS = ("is", "are")


def decode(ids: list[int] | Tensor) -> list[str]:
    """Token ids -> words (padding dropped)."""
    return [VOCAB[int(i)] for i in ids if int(i) != 0]


def sentence(
    rng: np.random.Generator, max_modifiers: int, exact: bool = False
) -> tuple[list[str], int, int]:
    """-> (words of the prefix before the verb, subject number, distance). ``exact``:
    exactly ``max_modifiers`` modifiers rather than a uniform number up to it."""

    def noun(number: int) -> str:
        return NOUNS[rng.integers(len(NOUNS))][number]

    number = int(rng.integers(2))
    words = ["the", noun(number)]
    for _ in range(max_modifiers if exact else int(rng.integers(max_modifiers + 1))):
        attractor = int(rng.integers(2))
        if rng.integers(2):
            words += [PREPOSITIONS[rng.integers(len(PREPOSITIONS))], "the", noun(attractor)]
        else:
            verb = VERBS[rng.integers(len(VERBS))][attractor]
            words += ["that", "the", noun(attractor), verb]
    return words, number, len(words) - 2


def agreement_sequences(
    rng: Rng, batch_size: int, max_modifiers: int, full: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """-> tokens [T_max, B] int64 (0-padded), lengths [B], labels [B] (0 singular,
    1 plural), distances [B]; time-major. ``full``: every sentence has exactly
    ``max_modifiers`` modifiers, half of them relative clauses (K // 2, by rejection),
    so all have the same length 2 + 3K + K // 2."""
    rng = as_rng(rng)
    B = positive("batch_size", batch_size)
    K = positive("max_modifiers", max_modifiers, minimum=0)
    sentences: list[tuple[list[str], int, int]] = []
    while len(sentences) < B:
        s = sentence(rng, K, exact=full)
        if not full or len(s[0]) == 2 + 3 * K + K // 2:
            sentences.append(s)
    T_max = max(len(words) for words, _, _ in sentences)
    tokens = np.zeros((T_max, B), dtype=np.int64)
    for b, (words, _, _) in enumerate(sentences):
        tokens[: len(words), b] = [INDEX[w] for w in words]
    lengths = np.array([len(w) for w, _, _ in sentences])
    labels = np.array([n for _, n, _ in sentences])
    distances = np.array([d for _, _, d in sentences])
    return tokens, lengths, labels, distances


class AgreementProblem(Problem):
    """Binary classification (is / are) from the state after the prefix; one-hot words."""

    name, input_size, output_size = "agreement", len(VOCAB), 2
    readout, headline, score = "final", "accuracy", "accuracy"

    def __init__(self, max_modifiers: int) -> None:
        self.max_modifiers = positive("max_modifiers", max_modifiers, minimum=0)

    @property
    def max_length(self) -> int:
        return 2 + 4 * self.max_modifiers  # "the" N, then relative clauses of 4 words

    def sample(self, rng: Rng, batch_size: int, full: bool = False) -> Batch:
        tokens, lengths, labels, distances = agreement_sequences(
            rng, batch_size, self.max_modifiers, full
        )
        t = torch.from_numpy(tokens)
        return Batch(
            F.one_hot(t, len(VOCAB)).float(),  # [T, B, V]
            torch.from_numpy(labels),
            None if full else torch.from_numpy(lengths),
            tokens=t,
            info={"distance": torch.from_numpy(distances)},
        )

    def sample_full(self, rng: Rng, batch_size: int) -> Batch:
        return self.sample(rng, batch_size, full=True)

    def loss(self, pred: Tensor, batch: Batch) -> Tensor:
        return F.cross_entropy(pred, batch.target)

    def metrics(self, pred: Tensor, batch: Batch) -> dict[str, float]:
        right = (pred.argmax(-1) == batch.target).float()
        out = {"accuracy": float(right.mean())}
        distance = batch.info["distance"]
        for d in sorted(set(distance.tolist())):
            out[f"accuracy_d{d}"] = float(right[distance == d].mean())
        return out

    def solved(self, metrics: dict[str, float]) -> bool:
        return metrics["accuracy"] == 1.0

    def labels(self, batch: Batch, index: int) -> list[str]:
        assert batch.tokens is not None
        return decode(batch.tokens[:, index])


def accuracy_by_distance(metrics: dict[str, float]) -> dict[int, float]:
    """{distance: accuracy} from ``AgreementProblem.metrics``."""
    return {
        int(k[len("accuracy_d") :]): v for k, v in metrics.items() if k.startswith("accuracy_d")
    }
