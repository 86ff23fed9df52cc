"""Atomic writes: the old content or the new, never a mix; links are refused."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import rnnkit
from rnnkit.common.io import (
    UnsafePathError,
    atomic_dir,
    atomic_path,
    atomic_savefig,
    atomic_write_text,
    open_log,
    previous_of,
)


def test_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_symbolic_link_is_never_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "metrics.jsonl"
    link.symlink_to(victim)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        atomic_write_text(link, "overwritten")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        open_log(link)
    assert victim.read_text() == "precious"


def test_a_directory_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "last"
    with atomic_dir(target) as tmp:
        (tmp / "a.json").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.json").write_text("2")
        raise RuntimeError("killed mid-write")
    assert (target / "a.json").read_text() == "1"
    with atomic_dir(target) as tmp:
        (tmp / "b.json").write_text("3")
    assert [p.name for p in target.iterdir()] == ["b.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["last"]  # no temporary, no .previous
    assert previous_of(target) == tmp_path / "last.previous"


def test_a_swap_that_died_between_renames_keeps_the_old_copy_until_the_new_lands(
    tmp_path, monkeypatch
):
    target = tmp_path / "last"
    with atomic_dir(target) as tmp:
        (tmp / "a.json").write_text("1")
    target.rename(previous_of(target))  # the state mid-swap

    def crash(src, dst):
        raise OSError("power cut at the rename")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", crash)
        with pytest.raises(OSError, match="power cut"), atomic_dir(target) as tmp:
            (tmp / "a.json").write_text("2")
    assert (previous_of(target) / "a.json").read_text() == "1"
    with atomic_dir(target) as tmp:
        (tmp / "a.json").write_text("2")
    assert (target / "a.json").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["last"]


def test_a_figure_is_saved_in_the_format_its_name_says(tmp_path):
    class Figure:  # records what matplotlib's savefig would be asked
        def savefig(self, path, **kwargs):
            self.kwargs = kwargs
            Path(path).write_bytes(b"\x89PNG")

    figure = Figure()
    atomic_savefig(figure, tmp_path / "loss.png", dpi=100)
    assert figure.kwargs == {"format": "png", "dpi": 100}
    assert [p.name for p in tmp_path.iterdir()] == ["loss.png"]


def test_only_common_io_renames_files_into_place():
    package = Path(rnnkit.__file__).parent
    callers = {
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if re.search(
            r"\bos\.(replace|rename)\(|\.rename\(|\btmp\w*\.replace\(",
            path.read_text(encoding="utf-8"),
        )
    }
    assert callers == {"common/io.py"}
