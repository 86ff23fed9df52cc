"""The model of a synthetic experiment: a layer stack and a linear head, read as the
problem says (``Problem.readout``)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from rnnkit.nn.layers import RNNBase
from rnnkit.synthetic.base import Batch, Problem


class SequenceModel(nn.Module):
    """``rnn`` (any rnnkit layer stack, time-major) and a head on its output."""

    def __init__(self, rnn: RNNBase, output_size: int, readout: str) -> None:
        super().__init__()
        if readout not in ("final", "every_step"):
            raise ValueError(f"readout must be 'final' or 'every_step', got {readout!r}")
        self.rnn, self.readout = rnn, readout
        self.head = nn.Linear(rnn.output_size * rnn.num_directions, output_size)

    def read(self, output: Tensor, h_n: Tensor | tuple[Tensor, ...]) -> Tensor:
        """The head on what the layer returned: output [T, B, H] and h_n."""
        if self.readout == "every_step":
            return self.head(output)  # [T, B, O]
        h = h_n[0] if isinstance(h_n, tuple) else h_n  # [L * dirs, B, H]
        return self.head(h[-1])  # [B, O]: the top layer at each sequence's last step

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.read(*self.rnn(x, lengths=lengths))

    def loss_fn(
        self, problem: Problem, batch: Batch
    ) -> Callable[[Tensor, Tensor | tuple[Tensor, ...]], Tensor]:
        """``loss_fn(output, h_n)`` for ``rnnkit.diagnostics.gradient_flow``."""
        return lambda output, h_n: problem.loss(self.read(output, h_n), batch)
