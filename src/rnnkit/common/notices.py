"""Notices: things a user should know that are not errors (a checkpoint that cannot be
verified, a damaged ``best/`` replaced by ``last/``).

They are warnings of the class ``Notice`` (a ``Warning``, not a ``UserWarning``: the test
suite turns rnnkit's UserWarnings into errors, and a notice is not one), so library users
filter or record them as any warning (``warnings.catch_warnings``, ``pytest.warns``); the
command line prints each as one line, ``note: ...``, on stderr.
"""

from __future__ import annotations

import warnings


class Notice(Warning):
    """Something the user should know; the work goes on."""


def notify(message: str) -> None:
    warnings.warn(message, Notice, stacklevel=3)
