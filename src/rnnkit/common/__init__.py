"""What every layer of rnnkit shares and that knows nothing of RNNs: typed configs
(``config``), boundary checks (``checks``), atomic file writes (``io``)."""
