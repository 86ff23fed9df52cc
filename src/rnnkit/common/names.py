"""Names that configs offer as choices, kept torch-free so that building the command
line's help never imports torch; tests check them against the registries they name."""

CELL_NAMES = ("rnn_tanh", "rnn_relu", "gru", "gru_reset_before", "lstm", "lstm_ln", "gru_ln")
"""``rnnkit.nn.cells.CELLS``: rnn_tanh, rnn_relu, gru (reset-after, as torch.nn/cuDNN),
gru_reset_before (Cho 2014), lstm; lstm_ln and gru_ln, layer-normalised (Ba et al. 2016)."""

TOKENIZER_KINDS = ("char", "word", "bpe")
"""``rnnkit.data.tokenizers.KINDS``."""
