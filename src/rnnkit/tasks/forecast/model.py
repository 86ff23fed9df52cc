"""Time-series forecasting with an RNN over a window of past values.

    h = RNN(x_{o-L} .. x_{o-1})_last            x_t in R^V (scaled), L the window
    direct:    [mu_o .. mu_{o+H-1}] = W h + b   all H steps at once (one head per step)
    recursive: mu_o = W h + b, then slide the window over mu_o and repeat H times

With ``gaussian`` the head also outputs log sigma^2 per value and trains on the Gaussian
negative log-likelihood (Nix & Weigend 1994; Salinas et al. 2020, DeepAR, section 3.1),
which gives prediction intervals mu +- z sigma. For the recursive strategy the interval
of step k is the model's one-step sigma at that step: it does not add up the uncertainty
of the values fed back, so it is too narrow for long horizons (documented, not hidden).
Shapes: inputs [B, L, V], mean and std [B, H, V].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.nn.factory import recurrent_layer, variant_fields
from rnnkit.tasks.forecast.config import ForecasterConfig
from rnnkit.train.pretrained import Adapter, PretrainedMixin


class Forecaster(nn.Module, PretrainedMixin):
    """``save_pretrained(dir, scaler=..., columns=...)`` / ``Forecaster.from_pretrained(dir)``:
    a folder in the Hub layout (``rnnkit.train.pretrained``);
    ``rnnkit.tasks.forecast.load(dir)`` gives the scaler with the model."""

    @classmethod
    def pretrained_adapter(cls) -> Adapter:
        from rnnkit.tasks.forecast.api import PRETRAINED  # the api imports this module

        return PRETRAINED

    def __init__(self, config: ForecasterConfig, num_variables: int) -> None:
        super().__init__()
        self.config, self.V = config, num_variables
        self.rnn = recurrent_layer(
            config.cell,
            num_variables,
            config.hidden_size,
            config.num_layers,
            dropout=config.dropout,
            batch_first=True,
            variants=variant_fields(config),
        )
        steps = config.horizon if config.strategy == "direct" else 1
        self.head = nn.Linear(
            self.rnn.output_size, steps * num_variables * (2 if config.gaussian else 1)
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, inputs: Tensor) -> tuple[Tensor, Tensor | None]:
        """inputs [B, L, V] -> (mean [B, S, V], log variance [B, S, V] or None); S = H or 1."""
        states, _ = self.rnn(inputs)
        out = self.head(self.dropout(states[:, -1]))  # [B, S * V * (1 or 2)]
        out = out.reshape(inputs.shape[0], -1, self.V * (2 if self.config.gaussian else 1))
        if self.config.gaussian:
            mean, log_var = out.split(self.V, dim=2)
            return mean, log_var.clamp(-12, 12)
        return out, None

    def loss(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """Mean squared error, or Gaussian NLL; the recursive model learns one step."""
        mean, log_var = self(inputs)
        targets = targets[:, : mean.shape[1]]
        if log_var is None:
            return F.mse_loss(mean, targets)
        return F.gaussian_nll_loss(mean, targets, log_var.exp(), full=True)

    @torch.no_grad()
    def forecast(self, inputs: Tensor, horizon: int | None = None) -> tuple[Tensor, Tensor | None]:
        """-> (mean [B, H, V], std [B, H, V] or None), in the scaled units of ``inputs``."""
        H = horizon or self.config.horizon
        if self.config.strategy == "direct":
            if H > self.config.horizon:
                raise ValueError(f"a direct model forecasts at most {self.config.horizon} steps")
            mean, log_var = self(inputs)
            std = None if log_var is None else (0.5 * log_var).exp()[:, :H]
            return mean[:, :H], std
        means, stds, window = [], [], inputs
        for _ in range(H):
            mean, log_var = self(window)  # [B, 1, V]
            means.append(mean)
            if log_var is not None:
                stds.append((0.5 * log_var).exp())
            window = torch.cat([window[:, 1:], mean], dim=1)
        return torch.cat(means, 1), (torch.cat(stds, 1) if stds else None)
