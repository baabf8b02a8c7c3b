"""Fuzzing the command line end to end: random CSV files through pool, bias and sensitivity.

Whatever the file and the options, ``metaalliance`` must answer with exit code 0 (and, with
--json, JSON without NaN or Infinity) or exit code 1 with one "error: ..." line from a
MetaAllianceError; stderr holds only "warning:", "note:" and "error:" lines. An uncaught
exception would be exit code 70 ("internal error", see cli.main) and fails the test.

Inputs that once failed are kept in tests/fuzz_corpus/cli_*.json ({"argv": [...], "csv":
"..."}) and replayed below. The long run (what CI does not do):
`FUZZ_EXAMPLES=20000 FUZZ_SAVE=1 .venv/bin/python -m pytest -q tests/test_fuzz_cli.py`
(FUZZ_SAVE=1 writes the shrunk failing input into the corpus before the test fails). The CSV
contents are random test input, not findings.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaalliance.cli import main

CORPUS = Path(__file__).parent / "fuzz_corpus"

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "120")), deadline=None,
                derandomize=not os.environ.get("FUZZ_EXAMPLES"),
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])

# --- the CSV ---------------------------------------------------------------------------------

edge = st.sampled_from(["0", "1", "-1", "1.0", "-1.0", "3", "4", "2.5", "-0", "1e-8", "1e3",
                        "1e308", "-1e308", "5e-324", "0.9999999999", "-0.9999999999", "100000",
                        "1e50", "-1.1e50", "1e-100", "9e-101", "1e100", "2e100", "1e-300"])
missing = st.sampled_from(["", "NA", "nan", "NaN", "NULL", ".", " "])
text = st.one_of(st.sampled_from(["abc", "1,5", "n.d.", "TRUE", "inf", "-inf", "Infinity",
                                  "0x10", "1_000", "\u0661\u0662", '"quoted"']),
                 st.text(max_size=6))
bad = st.one_of(edge, missing, text, st.floats(allow_nan=True, allow_infinity=True).map(repr))

#: what a column usually holds (plausible values) ...
VALID = {
    "study": st.one_of(st.sampled_from(["A", "B", "C", "D", "A", ""]), st.text(max_size=4)),
    "r": st.floats(-0.95, 0.95).map(lambda x: f"{x:.3f}"),
    "n": st.integers(4, 500).map(str),
    "yi": st.floats(-2, 2).map(lambda x: f"{x:.4f}"),
    "vi": st.floats(1e-4, 1).map(lambda x: f"{x:.4g}"),
    "g": st.sampled_from(["a", "b", "c", "a", "b", ""]),
    "x": st.one_of(st.integers(-5, 5).map(str), st.floats(-10, 10).map(lambda x: f"{x:.2f}")),
    "year": st.one_of(st.integers(1990, 2024).map(str), st.sampled_from(["2001", "n.d."])),
}
COLUMNS = tuple(VALID)


def cells(col):
    """... and about one cell in thirty is something else: an edge value, missing, text, any
    float (more would make nearly every file an error and leave the models untested)."""
    return st.integers(0, 29).flatmap(lambda i: bad if i == 0 else VALID[col])


def _quote(c: str) -> str:
    c = c.replace("\r", " ").replace("\n", " ")
    return f'"{c.replace(chr(34), chr(34) * 2)}"' if any(ch in c for ch in ',"') else c


def _needed(argv) -> list[str]:
    """The columns the options name."""
    out = []
    for flag, value in zip(argv, argv[1:]):
        if flag in ("--r", "--n", "--yi", "--vi", "--by", "--cluster", "--order"):
            out.append(value)
        elif flag == "--where":
            out.append(value.split("=")[0])
        elif flag == "--mods":
            out += [t.strip().removeprefix("factor(").removesuffix(")")
                    for t in value.lstrip("~").split("+")]
    return list(dict.fromkeys(out))


@st.composite
def csv_files(draw, needed=()):
    extra = draw(st.lists(st.sampled_from(COLUMNS), max_size=4, unique=True))
    cols = list(dict.fromkeys(list(needed) + extra)) or ["r"]
    if needed and not draw(st.integers(0, 7)):       # now and then a needed column is missing
        cols.remove(draw(st.sampled_from(list(needed))))
    cols = draw(st.permutations(cols)) if cols else cols
    n_rows = draw(st.one_of(st.integers(0, 3), st.integers(2, 15), st.integers(2, 15)))
    rows = [draw(st.tuples(*(cells(c) for c in cols))) for _ in range(n_rows)]
    lines = [",".join(cols)] + [",".join(_quote(x) for x in row) for row in rows]
    return "\n".join(lines) + ("\n" if draw(st.booleans()) else "")


@st.composite
def cases(draw):
    """(argv, CSV text): a command line and a file that mostly has the columns it names."""
    argv = draw(argvs())
    return argv, draw(csv_files(_needed(argv)))


# --- the command line ------------------------------------------------------------------------

@st.composite
def argvs(draw):
    command = draw(st.sampled_from(["pool", "bias", "sensitivity"]))
    argv = [command, "--data", "d.csv"]
    argv += draw(st.sampled_from([["--r", "r", "--n", "n"], ["--yi", "yi", "--vi", "vi"]]))
    argv += ["--method", draw(st.sampled_from(["REML", "DL", "EE", "PM", "ML", "SJ", "HE",
                                               "HS", "EB"]))]
    argv += ["--test", draw(st.sampled_from(["z", "knha"]))]
    if not draw(st.integers(0, 4)):
        argv += ["--where", draw(st.sampled_from(["g=a", "g=a,b", "year=2001", "study=A"]))]
    if command == "pool":
        argv += draw(st.sampled_from([
            [], ["--by", "g"], ["--by", "g", "--tau2-model", "pooled"], ["--mods", "~ x"],
            ["--mods", "~ g + x"], ["--mods", "~ factor(year)"], ["--mods", "~ year"],
            ["--cluster", "study"], ["--cluster", "g", "--mods", "~ x"],
            ["--mods", "~ x", "--permutations", "20", "--seed", "1"]]))
    elif command == "bias":
        argv += draw(st.sampled_from([[], ["--side", "left"], ["--estimator", "R0"]]))
    else:
        argv += draw(st.sampled_from([[], ["--order", "year"], ["--order", "x", "--decreasing"],
                                      ["--gosh", "20", "--seed", "3"]]))
    if draw(st.integers(0, 3)):
        argv.append("--json")
    return argv


def _refuse(constant):
    raise AssertionError(f"{constant} in the JSON output")


def _final_example() -> bool:
    """True outside hypothesis and on its final (shrunk) example: only that one is saved."""
    try:
        from hypothesis.control import current_build_context

        return bool(current_build_context().is_final)
    except Exception:            # no build context (corpus replay) or an older hypothesis
        return True


def check(capsys, folder: Path, argv: list[str], content: str) -> None:
    """One run; on failure (and with FUZZ_SAVE=1) the input is saved to the corpus first."""
    (folder / "d.csv").write_text(content, encoding="utf-8", errors="surrogatepass")
    capsys.readouterr()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        code = main(argv)
        out, err = capsys.readouterr()
        assert code in (0, 1), f"exit code {code}: {err}"
        for line in err.splitlines():
            assert line.startswith(("warning: ", "note: ", "error: ")), line
        if code == 1:
            assert err.splitlines()[-1].startswith("error: ") and out == ""
        elif "--json" in argv:
            json.loads(out, parse_constant=_refuse)
        else:
            assert "nan" not in out.lower().replace("nance", "").split() and out
    except BaseException:
        if os.environ.get("FUZZ_SAVE") and _final_example():
            case = json.dumps({"argv": argv, "csv": content}, ensure_ascii=False, indent=1)
            digest = hashlib.sha256(case.encode("utf-8", "surrogatepass")).hexdigest()[:12]
            (CORPUS / f"cli_{digest}.json").write_text(case, encoding="utf-8",
                                                       errors="surrogatepass")
        raise
    finally:
        os.chdir(cwd)


@FUZZ
@given(cases())
def test_random_csv_through_the_commands(capsys, tmp_path, case):
    argv, content = case
    check(capsys, tmp_path, argv, content)


@pytest.mark.parametrize("case", sorted(CORPUS.glob("cli_*.json")), ids=lambda p: p.stem)
def test_cli_corpus_regressions(capsys, tmp_path, case):
    """Inputs that once made the command line fail."""
    data = json.loads(case.read_text(encoding="utf-8", errors="surrogatepass"))
    check(capsys, tmp_path, data["argv"], data["csv"])
