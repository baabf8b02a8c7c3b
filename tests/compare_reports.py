"""Compare two report folders' report.html and report.md apart from whitespace.

    python tests/compare_reports.py BEFORE_DIR AFTER_DIR

Used to show that the Jinja2 templates (issue 16) render the same report as the f-strings
they replaced. Whitespace runs are collapsed to one space and whitespace between tags is
dropped; the only other normalisation is the spelling of the two quote entities (Python's
html.escape writes &#x27; and &quot;, Jinja2's markupsafe writes &#39; and &#34;: the same
characters), and the git commit named in the header line is masked (a report built from a
later commit names that commit). Exit 0 when both files match, 1 (with the first difference) otherwise.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

QUOTES = {"&#x27;": "'", "&#39;": "'", "&quot;": '"', "&#34;": '"'}


def normalise(text: str, html: bool) -> str:
    if html:
        for entity, char in QUOTES.items():
            text = text.replace(entity, char)
        text = re.sub(r">\s+<", "><", text)
        text = re.sub(r"commit <code>[0-9a-f]{12}</code>", "commit <code>COMMIT</code>", text)
    return re.sub(r"\s+", " ", text).strip()


def first_difference(a: str, b: str) -> str:
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"at character {i}:\n  before: ...{a[max(0, i - 80):i + 80]}\n  after:  ...{b[max(0, i - 80):i + 80]}"


def compare(before: Path, after: Path) -> list:
    problems = []
    for name in ("report.html", "report.md"):
        a = normalise((before / name).read_text(encoding="utf-8"), name.endswith(".html"))
        b = normalise((after / name).read_text(encoding="utf-8"), name.endswith(".html"))
        if a != b:
            problems.append(f"{name} differs {first_difference(a, b)}")
    return problems


if __name__ == "__main__":
    before, after = Path(sys.argv[1]), Path(sys.argv[2])
    problems = compare(before, after)
    for p in problems:
        print(p)
    if not problems:
        print("report.html and report.md: same content apart from whitespace")
    sys.exit(1 if problems else 0)
