"""metaalliance add: validated before writing, atomic, locked, comments kept."""

import subprocess
import sys
import textwrap

import pytest
import yaml

from conftest import snapshot
from metaalliance.dataset import curate
from metaalliance.dataset import fileio
from metaalliance.dataset import findings
from metaalliance.cli import main
from metaalliance.errors import ValidationError

FLAGS = ["--n", "64", "--stat", "r", "--value", "0.25", "--positive-is-better", "true",
         "--instrument", "WAI-S", "--rater", "client", "--timing", "early",
         "--outcome-measure", "PHQ-9", "--outcome-domain", "symptoms",
         "--effect-type", "zero_order", "--conversion", "exact", "--locator", "Table 3"]


def _args(dataset):
    fdir, bib = dataset
    return ["--findings", str(fdir), "--bib", str(bib)]


def test_add_to_existing_study_keeps_comments(dataset, capsys):
    fdir, _ = dataset
    assert main(["add", *_args(dataset), "--citekey", "alpha2001first", *FLAGS]) == 0
    assert capsys.readouterr().out.endswith("added finding f3 to "
                                            f"{findings.display_path(fdir / 'alpha2001first.yaml')}\n")
    text = (fdir / "alpha2001first.yaml").read_text()
    assert "# a reviewer's comment that add must keep" in text
    doc = yaml.safe_load(text)
    assert [f["id"] for f in doc["findings"]] == ["f1", "f2", "f3"]
    assert doc["findings"][2]["statistic"] == {"type": "r", "value": 0.25}
    assert doc["findings"][2]["sample"] == "alpha2001first"
    assert findings.validate(*dataset) == []


def test_add_new_study_with_bibtex(dataset, tmp_path):
    fdir, bib = dataset
    entry = tmp_path / "new.bib"
    entry.write_text("@article{zeta2019new,\n  author = {Zeta, Zoe and Eta, Ed},\n"
                     "  title = {New}, journal = {J}, year = {2019}\n}\n")
    study = ["--population", "adult", "--diagnosis", "ptsd", "--setting", "internet",
             "--modality", "individual", "--treatment", "cbt", "--country", "Germany",
             "--design", "rct", "--source", "doi:10.0000/new"]
    assert main(["add", *_args(dataset), "--citekey", "zeta2019new", "--bibtex", str(entry),
                 *study, *FLAGS]) == 0
    df = findings.load(fdir, bib)
    row = df[df.citekey == "zeta2019new"].iloc[0]
    assert row.label == "Zeta & Eta (2019)" and row.r == pytest.approx(0.25)


def test_rejected_add_changes_nothing(dataset, capsys):
    fdir, bib = dataset
    before = snapshot(fdir.parent.parent)
    bad = [a if a != "64" else "2" for a in FLAGS]
    assert main(["add", *_args(dataset), "--citekey", "alpha2001first", *bad]) == 1
    err = capsys.readouterr().err
    assert err == (f"{findings.display_path(fdir / 'alpha2001first.yaml')}: "
                   "finding f3: n: must be >= 4\n")
    assert snapshot(fdir.parent.parent) == before


def test_new_study_without_bib_entry_is_refused(dataset, capsys):
    fdir, bib = dataset
    before = snapshot(fdir.parent.parent)
    study = ["--population", "adult", "--diagnosis", "ptsd", "--setting", "internet",
             "--modality", "individual", "--treatment", "cbt", "--country", "Germany",
             "--design", "rct", "--source", "doi:10.0000/new"]
    assert main(["add", *_args(dataset), "--citekey", "zeta2019new", *study, *FLAGS]) == 1
    assert "citekey: 'zeta2019new' not in" in capsys.readouterr().err
    assert snapshot(fdir.parent.parent) == before


def test_interrupted_write_leaves_folder_identical(dataset, monkeypatch, tmp_path):
    """An exception after the first file was replaced: the transaction puts it back."""
    fdir, bib = dataset
    entry = "@article{zeta2019new,\n  author = {Zeta, Zoe},\n  title = {New}, year = {2019}\n}\n"
    study = {"citekey": "zeta2019new", "population": "adult", "diagnosis": "ptsd",
             "setting": "internet", "modality": "individual", "treatment": "cbt",
             "country": "Germany", "design": "rct", "source": "doi:10.0000/new",
             "findings": [{"n": 64, "statistic": {"type": "r", "value": 0.2},
                           "positive_is_better": True, "instrument": "WAI", "rater": "client",
                           "timing": "early", "outcome": {"measure": "X", "domain": "symptoms"},
                           "effect_type": "zero_order", "conversion": "exact",
                           "locator": "p. 1"}]}
    before = snapshot(fdir.parent.parent)
    real = fileio._replace
    calls = []

    def failing(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(fileio, "_replace", failing)
    with pytest.raises(OSError):
        curate.add_findings([study], entry, fdir, bib)
    assert len(calls) == 2
    assert snapshot(fdir.parent.parent) == before  # also: no temporary files left behind


def test_add_from_csv_and_yaml(dataset, tmp_path):
    fdir, bib = dataset
    csv = tmp_path / "new.csv"
    csv.write_text("citekey,n,stat_type,value,df,positive_is_better,instrument,rater,timing,"
                   "outcome_measure,outcome_domain,effect_type,conversion,locator\n"
                   "delta2005second,80,t,2.5,78,true,HAq,client,late,CBCL,symptoms,"
                   "zero_order,exact,Table 1\n")
    assert curate.add_findings(*curate.studies_from_file(csv), fdir, bib)[0].finding_id == "f2"
    y = tmp_path / "new.yaml"
    y.write_text(textwrap.dedent("""\
        citekey: delta2005second
        findings:
          - n: 80
            statistic: {type: spearman_rho, value: 0.1}
            positive_is_better: true
            instrument: HAq
            rater: parent
            timing: late
            outcome: {measure: CBCL, domain: symptoms}
            effect_type: zero_order
            conversion: exact
            locator: Table 1
        """))
    assert curate.add_findings(*curate.studies_from_file(y), fdir, bib)[0].finding_id == "f3"
    assert len(findings.load(fdir, bib)) == 5


def test_bad_csv_row_names_row_and_field(dataset, tmp_path, capsys):
    csv = tmp_path / "new.csv"
    csv.write_text("citekey,n,stat_type,value\ndelta2005second,eighty,r,0.2\n")
    assert main(["add", *_args(dataset), "--file", str(csv)]) == 1
    # every problem of the row at once (issue 11), the bad cell first
    lines = capsys.readouterr().err.splitlines()
    name = findings.display_path(csv)
    assert lines[0] == f"{name}: row 2: n: 'eighty' is not a number"
    assert f"{name}: row 2: instrument: missing" in lines
    assert all(line.startswith(f"{name}: row 2: ") for line in lines)


WORKER = textwrap.dedent("""\
    import sys
    from metaalliance.dataset import curate
    fdir, bib, tag = sys.argv[1], sys.argv[2], sys.argv[3]
    for i in range(8):
        f = {"n": 40 + i, "statistic": {"type": "r", "value": 0.1}, "positive_is_better": True,
             "instrument": "WAI", "rater": "client", "timing": "early",
             "outcome": {"measure": f"{tag}-{i}", "domain": "symptoms"},
             "effect_type": "zero_order", "conversion": "exact", "locator": "p. 1"}
        curate.add_findings([{"citekey": "alpha2001first", "findings": [f]}], None, fdir, bib)
    """)


def test_two_processes_adding_at_once_lose_nothing(dataset):
    fdir, bib = dataset
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(fdir), str(bib), tag])
             for tag in ("A", "B")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    doc = yaml.safe_load((fdir / "alpha2001first.yaml").read_text())
    measures = {f["outcome"]["measure"] for f in doc["findings"]}
    assert {f"{t}-{i}" for t in "AB" for i in range(8)} <= measures
    assert len(doc["findings"]) == 18
    assert len({f["id"] for f in doc["findings"]}) == 18
    assert findings.validate(fdir, bib) == []
