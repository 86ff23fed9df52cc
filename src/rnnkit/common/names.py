"""Names that configs offer as choices, kept torch-free so that building the command
line's help never imports torch; tests check them against the registries they name."""

CELL_NAMES = ("rnn_tanh", "rnn_relu", "gru", "gru_reset_before", "lstm")
"""``rnnkit.nn.cells.CELLS``: rnn_tanh, rnn_relu, gru (reset-after, as torch.nn/cuDNN),
gru_reset_before (Cho 2014), lstm."""

TOKENIZER_KINDS = ("char", "word", "bpe")
"""``rnnkit.data.tokenizers.KINDS``."""

CELLS_WITH_MEMORY = ("lstm",)
"""The cells with a memory state c beside h (``Cell.num_states == 2``)."""

PROJECTABLE_CELLS = ("lstm",)
"""The cells that take ``proj_size`` (torch.nn.LSTM's projection of h)."""
