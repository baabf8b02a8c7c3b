"""The living dataset: `metaalliance diff` between real commits of this repository, and the
dataset version in data/CHANGELOG.md."""

import json
import re
import subprocess

import pytest
import yaml

from metaalliance.cli import main
from metaalliance.dataset import findings, history

REPO = findings.REPO_ROOT
# commits of `git log -- data/findings` in this repository
FIRST = "28dfab2416af35d1e2de44c5d2e7d69fe4fd60b9"       # first curated dataset, 10 studies
ADD_ONE = "30375b9f3a5140a283103fd6f2f09dfec28e6b94"     # adds unknownauthor2022understanding
RECODE = "c638b3de04dae98d86f605abe6a962a5141d5ef8"      # unspecified levels replace codes
SKELETON = "e5f09975156a3cc26752568061ef8e129e793acb"    # before data/findings existed


def _have(*commits):
    for c in commits:
        res = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{c}^{{commit}}"],
                             capture_output=True)
        if res.returncode != 0:
            return False
    return True


needs_history = pytest.mark.skipif(not _have(FIRST, ADD_ONE, RECODE, SKELETON),
                                   reason="the repository's git history is not available")


def _docs_at(rev):
    """{citekey: study document} at a revision, read with plain git show + yaml (not the code
    under test)."""
    names = subprocess.run(["git", "-C", str(REPO), "ls-tree", "--name-only", rev,
                            "data/findings/"], capture_output=True, text=True, check=True)
    out = {}
    for path in names.stdout.split():
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"],
                              capture_output=True, text=True, check=True).stdout
        doc = yaml.safe_load(text)
        out[doc["citekey"]] = doc
    return out


@needs_history
def test_diff_of_a_commit_that_adds_one_study(capsys):
    assert main(["diff", FIRST, ADD_ONE, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["studies_added"] == ["unknownauthor2022understanding"]
    assert res["added"] == [{"citekey": "unknownauthor2022understanding", "id": "f1"}]
    assert res["removed"] == [] and res["studies_removed"] == [] and res["changed"] == []
    old, new = res["pooled"]["old"], res["pooled"]["new"]
    assert new["k"] == old["k"] + 1          # the new finding is an outcome finding
    assert new["ci_lower"] < new["r"] < new["ci_upper"]


@needs_history
def test_diff_shows_exactly_the_findings_that_changed(capsys):
    assert main(["diff", ADD_ONE, RECODE, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    old, new = _docs_at(ADD_ONE), _docs_at(RECODE)
    changed_findings = set()
    changed_studies = set()
    for ck in old:
        a, b = old[ck], new[ck]
        if {k: v for k, v in a.items() if k != "findings"} != \
                {k: v for k, v in b.items() if k != "findings"}:
            changed_studies.add(ck)
        fa = {f["id"]: f for f in a["findings"]}
        fb = {f["id"]: f for f in b["findings"]}
        assert set(fa) == set(fb)
        changed_findings |= {(ck, i) for i in fa if fa[i] != fb[i]}
    assert {(c["citekey"], c["id"]) for c in res["changed"] if c["id"]} == changed_findings
    assert {c["citekey"] for c in res["changed"] if c["id"] is None} == changed_studies
    # the same files git itself reports as changed
    files = subprocess.run(["git", "-C", str(REPO), "diff", "--name-only", ADD_ONE, RECODE, "--",
                            "data/findings"], capture_output=True, text=True, check=True)
    stems = {re.sub(r"^data/findings/(.*)\.yaml$", r"\1", p) for p in files.stdout.split()}
    assert {c["citekey"] for c in res["changed"]} == stems
    # one change per field, e.g. the study tag that lost its provisional code
    assert {"citekey": "shirk2008alliance", "id": None, "field": "design", "old": "other",
            "new": "unspecified"} in res["changed"]
    assert {"citekey": "jasper2014working", "id": "f2", "field": "modality_override",
            "old": None, "new": "group"} in res["changed"]
    assert res["added"] == res["removed"] == []


@needs_history
@pytest.mark.parametrize("rev, expected", [
    ("no-such-rev", "error: revision 'no-such-rev': not a commit of the repository at "),
    ("HEAD~100000", "error: revision 'HEAD~100000': not a commit of the repository at "),
    ("--output=x", "error: revision '--output=x': not a git revision"),
    (SKELETON, f"error: revision '{SKELETON}': data/findings: not in that commit (it predates "
               "the curated dataset)"),
])
def test_diff_on_a_bad_revision_is_one_line(rev, expected, capsys):
    assert main(["diff", "--", rev]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(expected), err


def test_dataset_version_is_the_newest_changelog_release(tmp_path):
    log = tmp_path / "CHANGELOG.md"
    log.write_text("# Dataset changelog\n\n## 1.2.0 (2027-01-02)\n\nx\n\n## 1.1.0 (2026-12-06)\n")
    assert history.dataset_version(log) == "1.2.0"
    assert history.dataset_version(tmp_path / "missing.md") is None
    shipped = history.dataset_version()
    assert shipped is not None
    text = history.CHANGELOG.read_text()
    # the shipped release names the counts of the shipped dataset
    df = findings.load()
    head = text.split(f"## {shipped}", 1)[1].split("\n## ", 1)[0]
    assert f"{df.citekey.nunique()} studies" in head and f"{len(df)} findings" in head


def test_changes_are_json_even_for_odd_yaml_values():
    import datetime as dt

    old = history.Snapshot("a", {("x2020y", "f1"): {"citekey": "x2020y", "id": "f1",
                                                    "read_at": dt.date(2020, 1, 2),
                                                    "value": float("nan")}},
                           {"x2020y"}, None, [])
    new = history.Snapshot("b", {("x2020y", "f1"): {"citekey": "x2020y", "id": "f1",
                                                    "read_at": "2020-01-03", "value": 0.2}},
                           {"x2020y"}, None, [])
    res = history.compare(old, new)
    json.dumps(res, allow_nan=False)
    assert {"citekey": "x2020y", "id": None, "field": "read_at", "old": "2020-01-02",
            "new": "2020-01-03"} in res["changed"]
    assert {"citekey": "x2020y", "id": "f1", "field": "value", "old": "nan",
            "new": 0.2} in res["changed"]
