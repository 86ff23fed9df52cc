"""Parallel-text readers (errors name file and line) and the dates generator."""

from __future__ import annotations

import datetime
from collections import defaultdict

import pytest

from rnnkit.data import DataError
from rnnkit.tasks.seq2seq import dates
from rnnkit.tasks.seq2seq.parallel import Pair, read_aligned, read_parallel, read_tsv


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_tsv_and_aligned_files_read_the_same_pairs(tmp_path):
    tsv = write(tmp_path / "p.tsv", "le chat\tthe cat\n\nun chien \t a dog\n")
    src = write(tmp_path / "p.fr", "le chat\n\nun chien\n")
    tgt = write(tmp_path / "p.en", "the cat\n\na dog\n")
    expected = [Pair("le chat", "the cat"), Pair("un chien", "a dog")]
    assert read_tsv(tsv) == read_aligned(src, tgt) == expected
    assert read_parallel(tsv) == read_parallel(src, tgt) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a\tb\nno tab here\n", "bad.tsv:2: expected 'source<TAB>target', found no tab"),
        ("a\tb\nc\td\te\n", "bad.tsv:2: expected 'source<TAB>target', found 2 tabs"),
        ("a\tb\n\n  \tx\n", "bad.tsv:3: the source is empty"),
        ("a\t \n", "bad.tsv:1: the target is empty"),
        ("\n\n", "bad.tsv: no pairs found"),
    ],
)
def test_tsv_errors_name_file_and_line(tmp_path, text, message):
    with pytest.raises(DataError, match=message.replace(".", r"\.")):
        read_tsv(write(tmp_path / "bad.tsv", text))


def test_aligned_file_errors(tmp_path):
    src = write(tmp_path / "a.src", "one\ntwo\nthree\n")
    with pytest.raises(DataError, match=r"a\.src has 3 lines but .*b\.tgt has 2"):
        read_aligned(src, write(tmp_path / "b.tgt", "1\n2\n"))
    with pytest.raises(DataError, match=r"c\.tgt:2: blank line, but .*a\.src:2 is not"):
        read_aligned(src, write(tmp_path / "c.tgt", "1\n\n3\n"))
    with pytest.raises(DataError, match="no such file"):
        read_aligned(src, tmp_path / "missing.tgt")


def test_dates_are_deterministic_under_a_seed():
    assert dates.splits(200, 20, 50, seed=3) == dates.splits(200, 20, 50, seed=3)
    assert dates.splits(200, 20, 50, seed=3) != dates.splits(200, 20, 50, seed=4)
    assert dates.generate(30, seed=1) == dates.generate(30, seed=1)
    # The test set depends only on the seed and its size, not on the training size.
    assert dates.splits(10, 5, 50, seed=3)[2] == dates.splits(300, 20, 50, seed=3)[2]


def test_dates_splits_are_disjoint_and_the_task_is_a_function():
    train, valid, test = dates.splits(3000, 300, 1000, seed=0)
    assert (len(train), len(valid), len(test)) == (3000, 300, 1000)
    sources = [{s for s, _ in split} for split in (train, valid, test)]
    assert sum(map(len, sources)) == 4300  # distinct within and across the splits
    meanings = defaultdict(set)
    for source, target in dates.generate(20_000, seed=5) + train + valid + test:
        meanings[source].add(target)
    assert max(len(m) for m in meanings.values()) == 1  # one written form, one date


# Forms Python's strptime (C locale) reads back; %y is re-pivoted to 1950..2049 below.
STRPTIME = (
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%Y%m%d",
    "%d.%m.%Y",
    "%d.%m.%y",
    "%d-%m-%Y",
    "%m/%d/%Y",
    "%B %d, %Y",
    "%b %d, %Y",
    "%d %B %Y",
    "%d %b %Y",
    "%A, %B %d, %Y",
    "%a %d %b %Y",
    "%A %d %B %Y",
    "%d. %B %Y",
)


def test_dates_iso_targets_parse_back_to_the_written_date():
    pairs = dates.generate(3000, seed=2)
    parsed = 0
    for source, target in pairs:
        date = datetime.date.fromisoformat(target)
        assert target == date.strftime("%Y-%m-%d") and dates.FIRST <= date <= dates.LAST
        assert str(date.day) in source and (
            str(date.year) in source or f"{date.year % 100:02d}" in source
        )
        for form in STRPTIME:
            try:
                read = datetime.datetime.strptime(source, form).date()
            except ValueError:
                continue
            if read.year > 2049:  # strptime's %y pivot is 69; the generator's is 50
                read = read.replace(year=read.year - 100)
            assert read == date, (source, form)
            parsed += 1
            break
    assert parsed > 400  # English and numeric forms: a real share of the sample
    assert any(not s.isascii() for s, _ in pairs)  # other locales' month names


def test_dates_reject_bad_sizes():
    with pytest.raises(ValueError, match="number of valid dates must be >= 0"):
        dates.splits(10, -1)
