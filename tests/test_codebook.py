"""data/README.md (the codebook) and metaalliance/options.py declare the same vocabularies."""

import re
from pathlib import Path

import pytest

from metaalliance.options import VOCABULARIES

CODEBOOK = Path(__file__).resolve().parent.parent / "data" / "README.md"


def codebook_tables() -> dict[str, dict[str, str]]:
    text = CODEBOOK.read_text(encoding="utf-8")
    tables = {}
    for m in re.finditer(r"^### (\w+)\n(.*?)(?=^#{2,3} |\Z)", text, flags=re.M | re.S):
        rows = re.findall(r"^\| *([^|]+?) *\| *([^|]+?) *\|$", m.group(2), flags=re.M)
        levels = {a: b for a, b in rows if a not in ("level",) and not set(a) <= set("-: ")}
        if levels:
            tables[m.group(1)] = levels
    return tables


@pytest.mark.parametrize("vocab", sorted(VOCABULARIES))
def test_codebook_lists_every_level_with_its_meaning(vocab):
    tables = codebook_tables()
    assert vocab in tables, f"data/README.md has no '### {vocab}' table"
    assert tables[vocab] == VOCABULARIES[vocab]
