"""Fuzzing the inputs a user controls: study YAML, BibTeX and CSV files.

Only the tool's own error types may come out (validate returns problem lines; the CSV reader
raises MetaAllianceError), never an uncaught exception. Inputs that once broke the code are kept
in tests/fuzz_corpus/ and replayed here as regression tests. The long run uses the same
properties with many more examples:
`FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q tests/test_fuzz_inputs.py`.
"""

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FIXTURE_BIB, STUDY_A
from metaalliance.dataset import findings
from metaalliance.dataset import tabular
from metaalliance.errors import MetaAllianceError

CORPUS = Path(__file__).parent / "fuzz_corpus"
pytestmark = pytest.mark.filterwarnings("ignore::metaalliance.errors.MetaAllianceWarning")

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# YAML values of every kind a hand-edited file can hold
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)


def check_study_text(tmp_path, text: str):
    fdir = tmp_path / "findings"
    fdir.mkdir(exist_ok=True)
    for old in fdir.iterdir():
        old.unlink()
    (fdir / "alpha2001first.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
    bib = tmp_path / "references.bib"
    bib.write_text(FIXTURE_BIB.split("@article{delta")[0])
    problems = findings.validate(fdir, bib)
    assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)
    if not problems:
        findings.load(fdir, bib)  # a clean file must load


@FUZZ
@given(st.text(max_size=400))
def test_any_text_as_study_file(tmp_path, text):
    check_study_text(tmp_path, text)


base = yaml.safe_load(STUDY_A)
finding_keys = list(base["findings"][0])
study_keys = [k for k in base if k != "findings"]


@FUZZ
@given(st.sampled_from(study_keys), values, st.sampled_from(finding_keys), values,
       st.sampled_from(["type", "value", "df", "sign", "n1", "n2"]), values)
def test_mutated_study_fields(tmp_path, skey, sval, fkey, fval, stkey, stval):
    doc = yaml.safe_load(STUDY_A)
    doc[skey] = sval
    doc["findings"][0][fkey] = fval
    if isinstance(doc["findings"][1].get("statistic"), dict):
        doc["findings"][1]["statistic"][stkey] = stval
    check_study_text(tmp_path, yaml.safe_dump(doc, allow_unicode=True))


@FUZZ
@given(st.text(max_size=300))
def test_any_text_as_bib(tmp_path, text):
    entries, problems = findings.parse_bib(text)
    assert isinstance(entries, dict) and all(isinstance(p, str) for p in problems)


def check_csv_bytes(tmp_path, data: bytes, columns):
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    try:
        sel = tabular.read_effects(path, **columns)
    except MetaAllianceError:
        return
    assert len(sel["yi"]) == len(sel["vi"]) == len(sel["labels"]) > 0
    assert all(v == v for v in sel["yi"]) and all(v > 0 for v in sel["vi"])


@FUZZ
@given(st.lists(st.lists(st.one_of(st.text(max_size=6), st.floats().map(str),
                                   st.integers(-5, 500).map(str)), min_size=0, max_size=4),
                max_size=8),
       st.booleans())
def test_csv_cells(tmp_path, rows, use_r):
    header = "r,n,yi,vi\n"
    body = "\n".join(",".join(c.replace(",", ";").replace("\n", " ") for c in row) for row in rows)
    cols = {"r": "r", "n": "n"} if use_r else {"yi": "yi", "vi": "vi"}
    check_csv_bytes(tmp_path, (header + body).encode("utf-8", "surrogatepass"), cols)


@FUZZ
@given(st.binary(max_size=300))
def test_csv_bytes(tmp_path, data):
    check_csv_bytes(tmp_path, data, {"r": "r", "n": "n"})


@pytest.mark.parametrize("case", sorted(CORPUS.glob("*")), ids=lambda p: p.name)
def test_corpus_regressions(tmp_path, case):
    """Inputs that once raised an uncaught exception."""
    data = case.read_bytes()
    if case.suffix == ".yaml":
        check_study_text(tmp_path, data.decode("utf-8", "surrogateescape"))
    elif case.suffix == ".csv":
        check_csv_bytes(tmp_path, data, {"r": "r", "n": "n"})
    elif case.suffix == ".bib":
        findings.parse_bib(data.decode("utf-8", "replace"))
