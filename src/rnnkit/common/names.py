"""Names that configs offer as choices, kept torch-free so that building the command
line's help never imports torch; tests check them against the registries they name."""

CELL_NAMES: tuple[str, ...] = ("rnn_tanh", "rnn_relu", "gru", "gru_reset_before", "lstm")
CELL_NAMES += ("mingru", "minlstm")
"""``rnnkit.nn.cells.CELLS``: rnn_tanh, rnn_relu, gru (reset-after, as torch.nn/cuDNN),
gru_reset_before (Cho 2014), lstm; mingru and minlstm (Feng et al. 2024: gates from x_t
only, trained with a parallel scan)."""

TOKENIZER_KINDS = ("char", "word", "bpe")
"""``rnnkit.data.tokenizers.KINDS``."""
