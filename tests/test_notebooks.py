"""The worked examples in notebooks/ run from top to bottom (nbclient), and never touch the data.

Each notebook checks its own results with asserts (the reviewer's re-added finding equals the
curated one, the exported PDF embeds its font); a failing assert fails the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
#: seconds a cell may take: the author notebook runs the whole report once
CELL_TIMEOUT = 600


def snapshot() -> dict:
    files = sorted((REPO / "data").rglob("*")) + [REPO / "references.bib"]
    return {p.relative_to(REPO).as_posix(): p.read_bytes() for p in files
            if p.is_file() and not p.name.endswith(".lock")}


def test_the_three_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == ["analyst", "author", "reviewer"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_leaves_the_data_alone(path, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    before = snapshot()
    book = nbformat.read(path, as_version=4)
    client = NotebookClient(book, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [out for cell in book.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert errors == []
    assert snapshot() == before
    assert list(tmp_path.iterdir()) == []  # nothing left in the working folder either
