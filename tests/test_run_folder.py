"""Run folders: claimed without a race, locked while in use, never taken from another run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from rnnkit.train import run_folder
from rnnkit.train.run_folder import LOCK_FILE, RunFolderError, RunInUseError


def _hold_lock_in_another_process(folder):
    """A child process that holds ``folder``'s lock until its stdin closes."""
    code = textwrap.dedent(
        f"""
        import sys
        from rnnkit.train import run_folder
        with run_folder.lock({str(folder)!r}):
            print("locked", flush=True)
            sys.stdin.read()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "locked"
    return child


def _release(child):
    child.stdin.close()
    assert child.wait(timeout=60) == 0


def test_a_claim_creates_the_folder_and_holds_its_lock(tmp_path):
    with run_folder.claim(tmp_path / "run") as folder:
        assert folder == tmp_path / "run" and folder.is_dir()
        assert run_folder.holds(folder)
        (folder / "last").mkdir()  # a checkpoint: the folder stays after the block
    assert not run_folder.holds(folder)
    assert (folder / "last").is_dir()


def test_a_folder_holding_a_run_is_never_reused(tmp_path):
    for name in ("last", "best", "last.previous"):
        out = tmp_path / name.replace(".", "_")
        (out / name).mkdir(parents=True)
        (out / LOCK_FILE).touch()
        with run_folder.claim(out) as folder:
            assert folder.name == f"{out.name}-2"
            (folder / "last").mkdir()


def test_someone_elses_files_are_left_alone(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.jsonl").write_text("my own notes\n")  # no run.lock: not rnnkit's leftover
    with run_folder.claim(out) as folder:
        assert folder == tmp_path / "mine-2"
        (folder / "last").mkdir()
    assert (out / "metrics.jsonl").read_text() == "my own notes\n"
    assert not (out / LOCK_FILE).exists()


def test_an_empty_folder_is_taken(tmp_path):
    with run_folder.claim(tmp_path) as folder:
        assert folder == tmp_path
        (folder / "last").mkdir()


def test_the_leftovers_of_a_run_killed_before_its_first_checkpoint_are_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_FILE).touch()
    (out / "metrics.jsonl").write_text("")
    (out / ".last.tmp-0123abcd").mkdir()
    with run_folder.claim(out) as folder:
        assert folder == out
        assert sorted(os.listdir(out)) == [LOCK_FILE]
        (folder / "last").mkdir()


def test_a_start_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="bad data"), run_folder.claim(out) as folder:
        (folder / "metrics.jsonl").write_text("")
        raise ValueError("bad data")
    assert not out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(KeyboardInterrupt), run_folder.claim(existing) as folder:
        (folder / "metrics.jsonl").write_text("")
        raise KeyboardInterrupt
    assert sorted(os.listdir(existing)) == [LOCK_FILE]


def test_a_folder_locked_by_another_process_is_skipped_and_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    child = _hold_lock_in_another_process(out)
    try:
        with run_folder.claim(out) as folder:
            assert folder == tmp_path / "run-2"
            (folder / "last").mkdir()
        with pytest.raises(RunInUseError, match=rf"in use by another process \(pid {child.pid}"):
            with run_folder.lock(out):
                pass
    finally:
        _release(child)
    with run_folder.lock(out):  # released when the holder ended
        pass


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path):
    child = _hold_lock_in_another_process(tmp_path)
    child.kill()
    child.wait(timeout=60)
    with run_folder.lock(tmp_path):
        pass


def test_locks_are_reentrant_within_a_process(tmp_path):
    with run_folder.lock(tmp_path), run_folder.lock(tmp_path):
        assert run_folder.holds(tmp_path)
    assert not run_folder.holds(tmp_path)


def test_files_and_links_in_place_of_a_run_folder_are_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match=r"'.*file' is a file; name a folder"):
        with run_folder.claim(tmp_path / "file"):
            pass
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(RunFolderError, match="is a symbolic link"):
        with run_folder.lock(tmp_path / "link"):
            pass
    (tmp_path / "real" / LOCK_FILE).symlink_to(tmp_path / "file")
    with pytest.raises(RunFolderError, match=r"run\.lock' is a symbolic link"):
        with run_folder.lock(tmp_path / "real"):
            pass
    assert (tmp_path / "file").read_text() == "x"


def test_a_numbered_sibling_that_is_a_file_is_passed_over(tmp_path):
    (tmp_path / "run" / "last").mkdir(parents=True)
    (tmp_path / "run-2").write_text("x")
    with run_folder.claim(tmp_path / "run") as folder:
        assert folder == tmp_path / "run-3"
        (folder / "last").mkdir()


def test_remove_temporaries_removes_only_temporaries(tmp_path):
    (tmp_path / ".last.tmp-00000000").mkdir()
    (tmp_path / ".metrics.jsonl.tmp-11111111").write_text("")
    (tmp_path / "last").mkdir()
    (tmp_path / ".hidden").write_text("")
    removed = run_folder.remove_temporaries(tmp_path)
    assert removed == [".last.tmp-00000000", ".metrics.jsonl.tmp-11111111"]
    assert sorted(os.listdir(tmp_path)) == [".hidden", "last"]
