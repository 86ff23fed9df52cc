"""rnnkit: recurrent neural networks (RNN, GRU, LSTM) as the literature writes them.

import rnnkit
gru = rnnkit.GRU(input_size=32, hidden_size=64, num_layers=2, reset_after=False)
output, h_n = gru(x)                  # same contract as torch.nn.GRU
model = rnnkit.load_pretrained("my-model")   # a task model saved with save_pretrained

The layers live in ``rnnkit.nn`` and are imported on first use, so that importing the
package (the CLI's ``--help``) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rnnkit.common.lazy import lazy_exports

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "GRUCell",
    "LSTMCell",
    "MinGRU",
    "MinLSTM",
    "RNNBase",
    "RNNCell",
    "get_backend",
    "load_pretrained",
    "set_backend",
    "use_backend",
]

if TYPE_CHECKING:
    from rnnkit.nn import (
        GRU,
        LSTM,
        RNN,
        GRUCell,
        LSTMCell,
        MinGRU,
        MinLSTM,
        RNNBase,
        RNNCell,
        get_backend,
        set_backend,
        use_backend,
    )

# load_pretrained (rnnkit.tasks.hub) stays out of the TYPE_CHECKING imports above: the
# import contracts read them, and the modules below the tasks import this package.
__getattr__ = lazy_exports(
    __name__, dict.fromkeys(__all__, "rnnkit.nn") | {"load_pretrained": "rnnkit.tasks.hub"}
)
