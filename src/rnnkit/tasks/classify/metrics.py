"""Accuracy, per-class and macro F1, and the confusion matrix (text and PNG)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rnnkit.common.io import atomic_savefig, atomic_write_text


@dataclass(frozen=True)
class ClassificationReport:
    names: tuple[str, ...]
    confusion: list[list[int]]
    """confusion[gold][predicted] counts."""

    @property
    def accuracy(self) -> float:
        total = sum(map(sum, self.confusion))
        return sum(self.confusion[i][i] for i in range(len(self.names))) / max(total, 1)

    def per_class(self) -> dict[str, dict[str, float]]:
        out = {}
        for i, name in enumerate(self.names):
            tp = self.confusion[i][i]
            predicted = sum(row[i] for row in self.confusion)
            gold = sum(self.confusion[i])
            p = tp / predicted if predicted else 0.0
            r = tp / gold if gold else 0.0
            out[name] = {
                "precision": p,
                "recall": r,
                "f1": 2 * p * r / (p + r) if p + r else 0.0,
                "support": gold,
            }
        return out

    @property
    def macro_f1(self) -> float:
        scores = self.per_class()
        return sum(s["f1"] for s in scores.values()) / len(scores)

    def text(self) -> str:
        width = max(8, *(len(n) for n in self.names))
        lines = [f"accuracy {100 * self.accuracy:.2f}%  macro F1 {100 * self.macro_f1:.2f}"]
        for name, s in self.per_class().items():
            lines.append(
                f"{name:>{width}}  P {100 * s['precision']:6.2f}  "
                f"R {100 * s['recall']:6.2f}  F1 {100 * s['f1']:6.2f}  n {s['support']}"
            )
        lines.append("confusion (rows gold, columns predicted):")
        lines.append(" " * width + "".join(f"{n:>{width + 2}}" for n in self.names))
        for name, row in zip(self.names, self.confusion, strict=True):
            lines.append(f"{name:>{width}}" + "".join(f"{c:>{width + 2}}" for c in row))
        return "\n".join(lines)

    def write(self, out_dir: str | Path) -> None:
        """report.txt, report.json and confusion.png in ``out_dir``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = Path(out_dir)
        atomic_write_text(out / "report.txt", self.text() + "\n")
        data = {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_class": self.per_class(),
            "names": list(self.names),
            "confusion": self.confusion,
        }
        atomic_write_text(out / "report.json", json.dumps(data, indent=2) + "\n")
        fig, ax = plt.subplots(figsize=(2 + 0.6 * len(self.names), 1.6 + 0.6 * len(self.names)))
        ax.imshow(self.confusion, cmap="Blues")
        ax.set_xticks(range(len(self.names)), self.names, rotation=45, ha="right")
        ax.set_yticks(range(len(self.names)), self.names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        for i, row in enumerate(self.confusion):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center")
        ax.set_title(f"accuracy {100 * self.accuracy:.1f}%")
        fig.tight_layout()
        atomic_savefig(fig, out / "confusion.png", dpi=100)
        plt.close(fig)


def classification_report(
    gold: Sequence[int], predicted: Sequence[int], names: Sequence[str]
) -> ClassificationReport:
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    confusion = [[0] * len(names) for _ in names]
    for g, p in zip(gold, predicted, strict=True):
        confusion[g][p] += 1
    return ClassificationReport(tuple(names), confusion)
