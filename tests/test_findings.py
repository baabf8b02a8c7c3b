"""The loader and validator: exact messages for each kind of broken file (DATA.md's list)."""

import math
import subprocess
import sys

import pytest

from conftest import STUDY_A
from metaalliance.dataset import findings
from metaalliance.cli import main
from metaalliance.errors import ValidationError


def _problems(findings_dir, bib):
    return findings.validate(findings_dir, bib)


def _edit(findings_dir, old, new, name="alpha2001first.yaml"):
    path = findings_dir / name
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return findings.display_path(path)


def test_fixture_is_clean(dataset):
    assert _problems(*dataset) == []


def test_load_tidy_frame(dataset):
    df = findings.load(*dataset)
    assert list(df.columns) == findings.COLUMNS
    assert len(df) == 3
    a1 = df[(df.citekey == "alpha2001first") & (df.finding_id == "f1")].iloc[0]
    assert a1.r == pytest.approx(0.30) and a1.yi == pytest.approx(math.atanh(0.30))
    assert a1.vi == pytest.approx(1 / 47)
    assert a1.label == "Alpha et al. (2001)"
    # t = -2.0 on df 48, positive_is_better false -> r = +2 / sqrt(52)
    a2 = df[(df.citekey == "alpha2001first") & (df.finding_id == "f2")].iloc[0]
    assert a2.r == pytest.approx(2 / math.sqrt(52))
    d1 = df[df.citekey == "delta2005second"].iloc[0]
    assert d1.r == pytest.approx(math.sqrt(4 / 82)) and d1.label == "Delta (2005)"


@pytest.mark.parametrize("old,new,expected", [
    ("rater: client", "rater: patient",
     "finding f1: rater: 'patient' is not one of client, therapist, observer, parent, combined, unspecified"),
    ("{type: r, value: 0.30}", "{type: r, value: 1.3}",
     "finding f1: statistic.value: r must be within [-1, 1]"),
    ("n: 50\n    statistic: {type: r", "n: 2\n    statistic: {type: r", "finding f1: n: must be >= 4"),
    ('    locator: "Table 2"\n', "", "finding f1: locator: missing"),
    ("{type: t, value: -2.0, df: 48}", "{type: t, value: -2.0}",
     "finding f2: statistic.df: missing (t needs df)"),
    ("- id: f2", "- id: f1", "finding f1: id: duplicate id"),
    ("{type: r, value: 0.30}", "{type: r, value: 1.0}",
     "finding f1: statistic.value: converts to r = 1; |r| must be < 1 "
     "(Fisher's z is infinite at +-1)"),
    ('source: "doi:10.0000/fixture.1"\n', "", "source: missing"),
    ("diagnosis: depression", "diagnosis: sadness",
     "diagnosis: 'sadness' is not one of depression, anxiety, ptsd, ocd, substance_use, "
     "personality_disorder, psychosis, eating_disorder, behavior_problems, medical, chronic_pain, mixed, "
     "unspecified"),
    ("    conversion: exact\n    locator: \"Table 2\"", "    conversion: approximate\n    locator: \"Table 2\"",
     "finding f1: note: missing (an approximate conversion must say why)"),
    ("timing: early", "timing: early\n    timng: late",
     "finding f1: timng: unknown field (allowed: id, n, statistic, positive_is_better, "
     "instrument, rater, timing, outcome, effect_type, conversion, locator, sample, "
     "instrument_detail, session, curation_id, via, note, population, diagnosis, setting, modality, "
     "treatment)"),
])
def test_each_problem_has_its_exact_message(dataset, old, new, expected):
    name = _edit(dataset[0], old, new)
    assert _problems(*dataset) == [f"{name}: {expected}"]


def test_unparsable_yaml(dataset):
    path = dataset[0] / "alpha2001first.yaml"
    path.write_text(STUDY_A.replace("findings:", "findings: [unclosed", 1))
    [line] = _problems(*dataset)
    assert line.startswith(f"{findings.display_path(path)}: cannot parse YAML (line ")


def test_yaml_object_construction_is_refused(dataset):
    path = dataset[0] / "alpha2001first.yaml"
    path.write_text("!!python/object/apply:os.system ['echo owned']\n")
    [line] = _problems(*dataset)
    assert "cannot parse YAML" in line and "python/object" in line


def test_unknown_citekey_and_orphan_bib_entry(dataset):
    fdir, bib = dataset
    text = (fdir / "delta2005second.yaml").read_text().replace("delta2005second", "omega2010lost")
    (fdir / "delta2005second.yaml").unlink()
    (fdir / "omega2010lost.yaml").write_text(text)
    f = findings.display_path(fdir / "omega2010lost.yaml")
    b = findings.display_path(bib)
    assert _problems(fdir, bib) == [
        f"{f}: citekey: 'omega2010lost' not in {b}",
        f"{b}: delta2005second: no findings file {findings.display_path(fdir)}/delta2005second.yaml",
    ]


def test_citekey_must_match_file_name(dataset):
    fdir, bib = dataset
    (fdir / "alpha2001first.yaml").rename(fdir / "alpha2001other.yaml")
    probs = _problems(fdir, bib)
    assert probs[0].endswith("citekey: 'alpha2001first' does not match the file name "
                             "alpha2001other.yaml")


def test_one_sample_counted_once(dataset):
    fdir, bib = dataset
    _edit(fdir, "sample: delta2005second", "sample: alpha2001first", "delta2005second.yaml")
    [line] = _problems(fdir, bib)
    assert line.endswith("finding f1: sample: 'alpha2001first' is already used by "
                         "alpha2001first: one sample is counted once (keep one paper's findings)")


def test_all_problems_at_once(dataset):
    fdir, bib = dataset
    _edit(fdir, "rater: client", "rater: patient")
    _edit(fdir, "n: 80", "n: 3", "delta2005second.yaml")
    _edit(fdir, "{type: t, value: -2.0, df: 48}", "{type: t, value: -2.0}")
    assert len(_problems(fdir, bib)) == 3


def test_load_raises_with_every_problem(dataset):
    _edit(dataset[0], "rater: client", "rater: patient")
    with pytest.raises(ValidationError) as err:
        findings.load(*dataset)
    assert len(err.value.problems) == 1


def test_cli_validate_exit_codes(dataset, capsys):
    fdir, bib = dataset
    assert main(["validate", "--findings", str(fdir), "--bib", str(bib)]) == 0
    name = _edit(fdir, "n: 80", "n: 2", "delta2005second.yaml")
    assert main(["validate", "--findings", str(fdir), "--bib", str(bib)]) == 1
    out = capsys.readouterr().out
    assert out == f"{name}: finding f1: n: must be >= 4\n"


def test_shipped_dataset_validates():
    assert findings.validate() == []
    df = findings.load()
    assert len(df) >= 1
    assert ((df.r > -1) & (df.r < 1)).all() and (df.vi > 0).all()
    # every citekey has a bib entry and every bib entry a findings file (checked by validate);
    # every finding has a source and a locator
    assert df.source.str.len().gt(0).all() and df.locator.str.len().gt(0).all()


def test_shipped_validate_command_runs_clean():
    proc = subprocess.run([sys.executable, "-m", "metaalliance.cli", "validate"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("fields,label", [
    ({"author": "Webb, Christian A. and DeRubeis, Robert J.", "year": "2011"}, "Webb & DeRubeis (2011)"),
    ({"author": "Misdrahi, D. and Petit, M. and others"}, "Misdrahi et al. (n.d.)"),
    ({"author": "{G\\'o}mez Penedo, Juan Martin", "year": "2020"}, "Gómez Penedo (2020)"),
    ({"title": "Understanding Components of Therapeutic Alliance", "year": "2022"},
     "\u201cUnderstanding Components of Therapeutic ...\u201d (2022)"),
    ({"url": "https://revista.example.org/a/727", "year": "2025"},
     "Anonymous, revista.example.org (2025)"),
])
def test_labels_from_bib(fields, label):
    body = ",\n".join(f"  {k} = {{{v}}}" for k, v in fields.items())
    entries, problems = findings.parse_bib(f"@article{{x2000y,\n{body}\n}}\n")
    assert problems == [] and entries["x2000y"].label == label


def test_every_problem_is_one_line(dataset):
    """Keys and ids with line breaks are escaped, so one problem never spans two lines."""
    fdir, bib = dataset
    path = fdir / "alpha2001first.yaml"
    path.write_text(path.read_text().replace("id: f1", 'id: "f1\\nx"').replace(
        "citekey: alpha2001first", 'citekey: alpha2001first\n"bad\\nkey": 1'))
    problems = _problems(fdir, bib)
    assert all("\n" not in p and p.isprintable() for p in problems)
    assert any(p.endswith("alpha2001first.yaml: finding 'f1\\nx': id: must be a short text id "
                          "such as f1") for p in problems)
    assert any("alpha2001first.yaml: bad\\nkey: unknown field" in p for p in problems)
