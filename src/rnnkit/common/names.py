"""Names that configs offer as choices, kept torch-free so that building the command
line's help never imports torch; tests check them against the registries they name."""

CELL_NAMES: tuple[str, ...] = ("rnn_tanh", "rnn_relu", "gru", "gru_reset_before", "lstm")
CELL_NAMES += ("lstm_ln", "gru_ln", "mingru", "minlstm")
"""``rnnkit.nn.cells.CELLS``: rnn_tanh, rnn_relu, gru (reset-after, as torch.nn/cuDNN),
gru_reset_before (Cho 2014), lstm; lstm_ln and gru_ln, layer-normalised (Ba et al. 2016);
mingru and minlstm (Feng et al. 2024: gates from x_t only, trained with a parallel scan)."""

TOKENIZER_KINDS = ("char", "word", "bpe")
"""``rnnkit.data.tokenizers.KINDS``."""

CELLS_WITH_MEMORY = ("lstm", "lstm_ln")
"""The cells with a memory state c beside h (``Cell.num_states == 2``)."""

PROJECTABLE_CELLS = ("lstm",)
"""The cells that take ``proj_size`` (torch.nn.LSTM's projection of h)."""
