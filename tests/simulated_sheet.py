"""A SIMULATED review-team sheet for the intake tests and benchmark.

Every row is made up by this code (seeded): the studies (``sim<k>2020simulated``), their r and n
are not findings and never leave tests/ and benchmarks/. ``WRONG_CELLS`` lists 40 cells made
deliberately wrong, each with the column its problem line must name.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

N_ROWS = 500
N_STUDIES = 50
SEED = 11

#: ten kinds of wrong cell: (column, bad value, text the problem line must contain)
WRONG_KINDS = [
    ("instrument", "WAIX", "instrument: 'WAIX' is not a level (allowed: WAI, "),
    ("n", "abc", "n: 'abc' is not a number"),
    ("n", 2, "n: must be >= 4"),
    ("value", 1.5, "value: r must be within [-1, 1]"),
    ("n", dt.datetime(2024, 3, 5), "n: '2024-03-05T00:00:00' is a date where a number belongs"),
    ("value", "=0.1*2", "value: a formula cell ('=0.1*2')"),
    ("positive_is_better", "maybe", "positive_is_better: 'maybe' must be true or false"),
    ("session", -1, "session: must be a whole number >= 0"),
    ("outcome_domain", "mood", "outcome_domain: 'mood' is not a level"),
    ("rater", "pt", "rater: 'pt' is not a level"),
]


def citekey(s: int) -> str:
    return f"sim{s:03d}x2020simulated"


def rows(n_rows: int = N_ROWS, seed: int = SEED) -> list[dict]:
    """SIMULATED clean rows: N_STUDIES made-up studies, findings spread evenly."""
    rng = np.random.default_rng(seed)
    per = max(1, n_rows // N_STUDIES)
    out = []
    for i in range(n_rows):
        s = i // per
        out.append({
            "citekey": citekey(s), "population": "adult", "diagnosis": "depression",
            "setting": "outpatient", "modality": "individual", "treatment": "cbt",
            "country": "simulated", "design": "rct",
            "source": f"url:https://example.org/simulated/{s}",
            "id": f"f{i % per + 1}", "n": int(rng.integers(20, 300)), "stat_type": "r",
            "value": round(float(rng.uniform(-0.5, 0.6)), 3), "positive_is_better": True,
            "instrument": ["WAI", "WAI-S", "CALPAS"][int(rng.integers(3))],
            "rater": "client", "timing": "early", "session": int(rng.integers(1, 10)),
            "outcome_measure": "simulated outcome", "outcome_domain": "symptoms",
            "effect_type": "zero_order", "conversion": "exact", "locator": "simulated",
        })
    return out


def bibtex(n_rows: int = N_ROWS) -> str:
    studies = sorted({r["citekey"] for r in rows(n_rows)})
    return "\n".join(f"@misc{{{ck},\n  title = {{Simulated study {ck}}},\n  year = {{2020}}\n}}\n"
                     for ck in studies)


#: 40 wrong cells: (sheet row as a spreadsheet numbers it, column, bad value, expected text)
WRONG_CELLS = [(2 + 12 * j + 3, *WRONG_KINDS[j % len(WRONG_KINDS)]) for j in range(40)]


def columns(records: list[dict]) -> list[str]:
    cols: list[str] = []
    for r in records:
        cols += [k for k in r if k not in cols]
    return cols


def write_xlsx(path, records: list[dict]) -> None:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "findings"
    cols = columns(records)
    ws.append(cols)
    for r in records:
        ws.append([r.get(c) for c in cols])
    wb.save(path)


def with_wrong_cells(records: list[dict]) -> list[dict]:
    out = [dict(r) for r in records]
    for row, col, bad, _ in WRONG_CELLS:
        out[row - 2][col] = bad
    return out
