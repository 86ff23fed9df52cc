"""Dates written the many ways people write them, paired with ISO 8601 (YYYY-MM-DD).

The machine-translation exercise of the classic sequence-models course, made real-world
shaped: each example is a date drawn uniformly from 1950-01-01 .. 2049-12-31, written in
one of several locales (English US/UK, French, German, Spanish, Italian, Portuguese PT/BR,
Dutch) by Babel's CLDR formats and a few hand patterns, sometimes lower- or upper-cased::

    "jeudi 5 janvier 2023"        -> "2023-01-05"
    "5 de jan. de 2023"           -> "2023-01-05"
    "Jan 5th, 2023"               -> "2023-01-05"
    "05.01.23"                    -> "2023-01-05"

Every written form names one date, so the task is a function:
    * numeric forms follow one convention per separator: dots and dashes are day-first
      (German, Dutch), slashes are month-first (US) and year-first forms are ISO-like.
      The locales' own "short" formats (5/1/23 in Spain, 1/5/23 in the US) are left out,
      because they contradict each other.
    * two-digit years are read with the pivot of the date range: 50-99 -> 19xx,
      00-49 -> 20xx.

Splits are disjoint by the written string: the test set is the first ``test`` distinct
strings a seeded generator draws, validation the next ``valid``, training the rest, so the
test set depends only on the seed and its size. Output depends on the seed and on Babel's
CLDR data (the Babel version).
"""

from __future__ import annotations

import datetime
import random
from functools import cache

from babel import Locale
from babel.dates import format_date

LOCALES = ("en_US", "en_GB", "fr_FR", "de_DE", "es_ES", "it_IT", "pt_PT", "pt_BR", "nl_NL")
FIRST, LAST = datetime.date(1950, 1, 1), datetime.date(2049, 12, 31)

# Babel (CLDR) patterns with month or weekday names, written in any of the locales.
NAMED_PATTERNS = (
    "d MMM y",
    "d MMMM y",
    "dd MMM y",
    "MMM d, y",
    "MMMM d, y",
    "EEE d MMM y",
    "EEEE d MMMM y",
    "EEEE, MMMM d, y",
    "d. MMMM y",
)
# Numeric patterns, one convention per separator (see the module docstring).
NUMERIC_PATTERNS = (
    "y-MM-dd",
    "y/MM/dd",
    "yyyyMMdd",
    "dd.MM.y",
    "d.M.y",
    "dd.MM.yy",
    "dd-MM-y",
    "MM/dd/y",
    "M/d/y",
)
LOCALE_FORMATS = ("medium", "long", "full")


@cache
def _locale(name: str) -> Locale:
    return Locale.parse(name)


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def write_date(date: datetime.date, rng: random.Random) -> str:
    """One human way of writing ``date``, chosen with ``rng``."""
    kind = rng.random()
    if kind < 0.35:  # the locale's own medium/long/full format
        locale = _locale(rng.choice(LOCALES))
        text = format_date(date, rng.choice(LOCALE_FORMATS), locale=locale)
        if not any(c.isalpha() for c in text):  # a numeric medium format: d/M or M/d?
            text = format_date(date, "long", locale=locale)
    elif kind < 0.75:
        text = format_date(date, rng.choice(NAMED_PATTERNS), locale=_locale(rng.choice(LOCALES)))
    elif kind < 0.85:  # English ordinals
        month = format_date(date, rng.choice(("MMMM", "MMM")), locale=_locale("en_GB"))
        day = _ordinal(date.day)
        y = date.year
        text = rng.choice(
            (
                f"{month} {day}, {y}",
                f"{day} {month} {y}",
                f"the {day} of {month} {y}",
                f"{day} of {month}, {y}",
            )
        )
    else:
        text = format_date(date, rng.choice(NUMERIC_PATTERNS), locale=_locale("en_US"))
    case = rng.random()
    if case < 0.1:
        return text.lower()
    if case < 0.15:
        return text.upper()
    return text


def random_date(rng: random.Random) -> datetime.date:
    return FIRST + datetime.timedelta(days=rng.randrange((LAST - FIRST).days + 1))


def generate(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (written date, ISO date) pairs, the same for the same seed (strings may repeat)."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        date = random_date(rng)
        pairs.append((write_date(date, rng), date.isoformat()))
    return pairs


def splits(
    train: int, valid: int = 1_000, test: int = 10_000, seed: int = 0
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, valid, test) pairs, disjoint by the written string; see the module docstring."""
    for name, value in (("train", train), ("valid", valid), ("test", test)):
        if value < 0:
            raise ValueError(f"the number of {name} dates must be >= 0, got {value}")
    rng = random.Random(seed)
    seen: set[str] = set()
    pairs: list[tuple[str, str]] = []
    total = train + valid + test
    attempts = 0
    while len(pairs) < total:
        attempts += 1
        if attempts > 20 * total + 1000:
            raise ValueError(f"could not draw {total:,} distinct written dates")
        date = random_date(rng)
        text = write_date(date, rng)
        if text not in seen:
            seen.add(text)
            pairs.append((text, date.isoformat()))
    return pairs[test + valid :], pairs[test : test + valid], pairs[:test]
