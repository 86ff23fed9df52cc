"""The course (docs/course.md): every chapter's source parses and is in the site's nav
(default run); every chapter executes within its budget and the site builds in strict
mode from the executed copies (slow: ``pip install ".[docs]"``, ``.ci/run``)."""

from __future__ import annotations

import ast
import importlib.util
import re
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COURSE = ROOT / "course"
CHAPTERS = sorted(COURSE.glob("[0-9][0-9]_*.py"))
EXPECTED = 7


def _build_module():
    spec = importlib.util.spec_from_file_location("course_build", COURSE / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_chapter_exists_parses_asserts_and_is_in_the_nav():
    assert [p.name[:2] for p in CHAPTERS] == [f"{n:02d}" for n in range(1, EXPECTED + 1)]
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for source in CHAPTERS:
        text = source.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(source))
        asserts = [n for n in ast.walk(tree) if isinstance(n, ast.Assert)]
        checks = re.findall(r"\b(?:assert_allclose|assert_close|assert_equal)\(", text)
        assert len(asserts) + len(checks) >= 3, f"{source.name} asserts (almost) nothing"
        assert "# %% [markdown]" in text and "format_name: percent" in text, source.name
        assert f"course/{source.stem}.ipynb" in nav, f"{source.name} is not in mkdocs.yml's nav"
    assert "course.md" in nav


def _docs_extra() -> None:
    for module in ("jupytext", "nbclient", "nbformat", "ipykernel", "mkdocs", "mkdocs_jupyter"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(
                f"{module} is missing: the course needs the docs extra, pip install '.[docs]'"
            )


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("course") / "notebooks"


@pytest.mark.slow
@pytest.mark.parametrize("source", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_executes_within_its_budget(source, executed):
    _docs_extra()
    build = _build_module()
    path, seconds = build.execute(source, executed)  # a failing cell raises
    assert path.is_file()
    assert seconds <= build.BUDGET_S, f"{source.name} took {seconds:.0f} s"


@pytest.mark.slow
def test_site_builds_in_strict_mode(executed, tmp_path):
    _docs_extra()
    build = _build_module()
    for source in CHAPTERS:  # the ones this session has not executed yet (run alone)
        if not (executed / f"{source.stem}.ipynb").is_file():
            build.execute(source, executed)
    start = time.perf_counter()
    build.build_site(build.stage(executed, tmp_path / "site-src"), tmp_path / "site")
    print(f"site built in {time.perf_counter() - start:.1f} s")
    for source in CHAPTERS:
        page = tmp_path / "site" / "course" / source.stem / "index.html"
        assert page.is_file(), page
        assert "Traceback" not in page.read_text(encoding="utf-8")
    assert (tmp_path / "site" / "api" / "index.html").is_file()
