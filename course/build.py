"""Render the course's jupytext sources to notebooks, execute them, and build the site.

    python course/build.py build/course    # every chapter executed, then mkdocs --strict

The chapters are percent-format ``.py`` files (``NN_name.py``, jupytext), the only form
kept in git; their executed ``.ipynb`` copies and the site go under the output folder.
The site (``mkdocs.yml``) is built from a staging copy of docs/ with the executed
notebooks under ``course/``, so mkdocs-jupyter renders them without executing again.
``tests/test_course.py`` runs the same functions (``pip install ".[docs]"``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COURSE = ROOT / "course"
CHAPTERS = sorted(COURSE.glob("[0-9][0-9]_*.py"))
BUDGET_S = 120.0  # one notebook on 2 cores (the bound)


def render(source: Path):
    """The notebook (nbformat) of a percent-format source, not executed."""
    import jupytext

    return jupytext.read(source)


def execute(source: Path, out_dir: Path, timeout: float = BUDGET_S) -> tuple[Path, float]:
    """Execute ``source``'s notebook in a fresh kernel (working directory ``out_dir``),
    write the executed copy to ``out_dir/NAME.ipynb``; -> (path, seconds). A failing
    cell raises ``nbclient.exceptions.CellExecutionError``."""
    import nbformat
    from nbclient import NotebookClient

    out_dir.mkdir(parents=True, exist_ok=True)
    notebook = render(source)
    client = NotebookClient(
        notebook,
        timeout=int(timeout),  # per cell; the caller checks the whole notebook's time
        kernel_name="python3",
        resources={"metadata": {"path": str(out_dir)}},
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    path = out_dir / f"{source.stem}.ipynb"
    nbformat.write(notebook, path)
    return path, seconds


def stage(executed: Path, staging: Path) -> Path:
    """docs/ copied to ``staging``, with the executed notebooks of ``executed`` under
    ``staging/course/``; -> staging."""
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(ROOT / "docs", staging)
    (staging / "course").mkdir()
    for source in CHAPTERS:
        notebook = executed / f"{source.stem}.ipynb"
        if not notebook.is_file():
            raise FileNotFoundError(f"{notebook} is missing: execute {source.name} first")
        shutil.copy2(notebook, staging / "course" / notebook.name)
    return staging


def build_site(staging: Path, site_dir: Path) -> None:
    """mkdocs in strict mode (a warning is an error) from ``staging`` into ``site_dir``."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    config = load_config(
        str(ROOT / "mkdocs.yml"), docs_dir=str(staging), site_dir=str(site_dir), strict=True
    )
    config.plugins.on_startup(command="build", dirty=False)
    try:
        build(config)
    finally:
        config.plugins.on_shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder (executed notebooks, site)")
    args = parser.parse_args()
    out = args.out.resolve()
    for source in CHAPTERS:
        _, seconds = execute(source, out / "notebooks")
        print(f"{source.name}: {seconds:.1f} s", flush=True)
    start = time.perf_counter()
    build_site(stage(out / "notebooks", out / "site-src"), out / "site")
    print(f"site: {out / 'site'} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
