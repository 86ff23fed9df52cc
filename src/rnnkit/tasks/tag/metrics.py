"""Span-level precision, recall and F1, by the definition of the CoNLL ``conlleval``
script: a predicted chunk counts only if its type, start and end all match a gold chunk.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from rnnkit.tasks.tag.schemes import spans


@dataclass(frozen=True)
class PRF:
    correct: int
    predicted: int
    gold: int

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        return self.correct / self.gold if self.gold else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass(frozen=True)
class SpanScores:
    overall: PRF
    by_type: dict[str, PRF] = field(default_factory=dict)
    token_accuracy: float = 0.0

    def report(self) -> str:
        """A conlleval-style text table (percentages)."""
        o = self.overall
        lines = [
            f"accuracy: {100 * self.token_accuracy:6.2f}%; precision: {100 * o.precision:6.2f}%; "
            f"recall: {100 * o.recall:6.2f}%; FB1: {100 * o.f1:6.2f}"
        ]
        for kind, s in sorted(self.by_type.items()):
            lines.append(
                f"{kind:>17}: precision: {100 * s.precision:6.2f}%; "
                f"recall: {100 * s.recall:6.2f}%; FB1: {100 * s.f1:6.2f}  {s.predicted}"
            )
        return "\n".join(lines)


def span_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> SpanScores:
    """Scores over sentences of gold and predicted tags (any scheme, conlleval's reading)."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    correct, n_pred, n_gold = Counter[str](), Counter[str](), Counter[str]()
    tokens = right = 0
    for index, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {index}: {len(g)} gold tags but {len(p)} predicted")
        gold_spans, pred_spans = set(spans(g)), set(spans(p))
        for kind, *_ in gold_spans:
            n_gold[kind] += 1
        for kind, *_ in pred_spans:
            n_pred[kind] += 1
        for kind, *_ in gold_spans & pred_spans:
            correct[kind] += 1
        tokens += len(g)
        right += sum(a == b for a, b in zip(g, p, strict=True))
    kinds = set(n_gold) | set(n_pred)
    by_type = {k: PRF(correct[k], n_pred[k], n_gold[k]) for k in kinds}
    overall = PRF(sum(correct.values()), sum(n_pred.values()), sum(n_gold.values()))
    return SpanScores(overall, by_type, right / tokens if tokens else 0.0)
