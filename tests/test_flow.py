"""The dataset's frontier: findings read in review tables (via), data/awaiting.csv, the exclusion
categories and the PRISMA 2020 flow counted from the files.

The recount below reads the three files with plain csv/yaml, independently of dataset.flow, and
must give the numbers the flow, `summary --json` and the drawn figure show."""

import csv
import json
from pathlib import Path

import pytest
import yaml

from conftest import FIXTURE_BIB, STUDY_A
from metaalliance.cli import main
from metaalliance.dataset import findings, flow
from metaalliance.dataset.selection import apply_where

DATA = Path(__file__).resolve().parent.parent / "data"


def _recount() -> dict:
    """The PRISMA numbers recounted from the shipped files, by the documented rules."""
    included, n_findings, n_review, samples, kinds = set(), 0, 0, set(), {}
    for path in sorted((DATA / "findings").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        included.add(doc["citekey"])
        n_findings += len(doc["findings"])
        n_review += sum(1 for f in doc["findings"] if f.get("via"))
        samples |= {f["sample"] for f in doc["findings"]}
        kinds[doc["citekey"]] = "review" if any(f.get("via") for f in doc["findings"]) else "study"
    awaiting = list(csv.DictReader((DATA / "awaiting.csv").open(encoding="utf-8")))
    by_missing = {}
    for row in awaiting:
        kinds[row["citekey"]] = row["identified_in"]
        by_missing[row["missing"]] = by_missing.get(row["missing"], 0) + 1
    cats = {}
    for row in csv.DictReader((DATA / "excluded.csv").open(encoding="utf-8")):
        key = row["citekey"] or row["source_url"]
        if key in included or key in {r["citekey"] for r in awaiting}:
            continue
        cats.setdefault(key, []).append(row["category"])
        if row["read_in"] == "study" or key not in kinds:
            kinds[key] = row["read_in"]
    order = list(flow.CATEGORIES)
    first = [min(c, key=order.index) for c in cats.values()]
    identified = len(kinds)
    dup = first.count("duplicate")
    screen = first.count("not_alliance_outcome")
    return {"identified_total": identified, "duplicates": dup, "screened": identified - dup,
            "excluded_screening": screen, "sought": identified - dup - screen,
            "awaiting": by_missing, "awaiting_total": len(awaiting),
            "assessed": identified - dup - screen - len(awaiting),
            "excluded_reports_total": len(first) - dup - screen,
            "studies": len(included), "samples": len(samples), "findings": n_findings,
            "findings_read_in_review": n_review,
            "identified_review": sum(1 for k in kinds.values() if k == "review")}


def _as_recount(d: dict) -> dict:
    out = {k: d[k] for k in ("identified_total", "duplicates", "screened", "excluded_screening",
                             "sought", "awaiting", "awaiting_total", "assessed", "studies",
                             "samples", "findings", "findings_read_in_review")}
    out["excluded_reports_total"] = sum(d["excluded_reports"].values())
    out["identified_review"] = d["identified"]["review"]
    return out


def test_flow_counts_equal_a_recount_of_the_files():
    got = flow.counts().as_dict()
    assert _as_recount(got) == _recount()
    # PRISMA identity: every record has one status
    assert got["assessed"] == got["studies"] + sum(got["excluded_reports"].values())


def test_shipped_dataset_meets_the_issue_floor():
    counts = flow.counts()
    assert counts.studies >= 15 and counts.findings >= 25
    assert counts.awaiting_total >= 50


def test_summary_json_and_prisma_json_carry_the_same_counts(capsys):
    assert main(["summary", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert main(["prisma", "--json"]) == 0
    prisma = json.loads(capsys.readouterr().out)
    assert summary["coverage"] == prisma
    assert summary["total"]["studies"] == prisma["studies"]
    assert summary["total"]["findings"] == prisma["findings"]
    assert _as_recount(prisma) == _recount()


def test_summary_prints_the_coverage_sentence(capsys):
    assert main(["summary"]) == 0
    out = capsys.readouterr().out
    rc = _recount()
    assert f"{rc['studies']} studies included, {rc['awaiting_total']} awaiting extraction" in out


def test_figure_shows_the_recounted_numbers(tmp_path):
    from metaalliance.figures import prisma
    rc = _recount()
    fig = prisma.prisma_figure(flow.counts())
    texts = {t.get_gid(): t.get_text() for t in fig.axes[0].texts}
    assert f"Records screened (n = {rc['screened']})" == texts["prisma-screened"]
    assert f"Reports assessed for eligibility (n = {rc['assessed']})" == texts["prisma-assessed"]
    assert texts["prisma-included"].startswith(f"Studies included (n = {rc['studies']})")
    assert f"Findings (n = {rc['findings']})" in texts["prisma-included"]
    assert f"Reports awaiting extraction (n = {rc['awaiting_total']})" in texts["prisma-awaiting"]
    for missing, k in rc["awaiting"].items():
        assert f"{prisma.MISSING_LABELS[missing]} (n = {k})" in texts["prisma-awaiting"]


def test_figure_text_stays_inside_its_box():
    from metaalliance.figures import prisma
    fig = prisma.prisma_figure(flow.counts())
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = {p.get_gid().removesuffix("-box"): p.get_window_extent(renderer)
             for p in ax.patches if (p.get_gid() or "").endswith("-box")}
    checked = 0
    for t in ax.texts:
        box = boxes[t.get_gid()]
        e = t.get_window_extent(renderer)
        assert box.x0 <= e.x0 and e.x1 <= box.x1 and box.y0 <= e.y0 and e.y1 <= box.y1, gid
        checked += 1
    assert checked == len(boxes) == 13   # header, 9 boxes, 3 phase labels


def test_prisma_command_writes_pdf_and_png(tmp_path, capsys):
    assert main(["prisma", "--out", str(tmp_path / "p.pdf")]) == 0
    assert main(["prisma", "--out", str(tmp_path / "p.png"), "--dpi", "100"]) == 0
    assert (tmp_path / "p.pdf").read_bytes()[:4] == b"%PDF"
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_prisma_command_needs_out_or_json(capsys):
    assert main(["prisma"]) == 1
    assert capsys.readouterr().err.strip() == \
        "error: prisma: give --out FILE (the figure) or --json (the counts)"


def test_read_in_review_selects_primary_findings_only():
    df = findings.load()
    primary = apply_where(df, [("read_in_review", ["false"])], "data")
    review = apply_where(df, [("read_in_review", ["true"])], "data")
    assert len(primary) + len(review) == len(df)
    assert (review["via"] != "").all() and (primary["via"] == "").all()
    assert set(review["source"]) <= {"doi:10.1186/s40639-016-0018-7",
                                     "doi:10.1016/j.invent.2017.11.005"}


# --- validate: via, awaiting.csv and excluded.csv ----------------------------------------------

REVIEW_BIB = """
@article{omega2010review,
  author = {Omega, Olga},
  title = {A fixture review},
  year = {2010},
  doi = {10.0000/review.1}
}
"""


@pytest.fixture
def via_dataset(dataset):
    findings_dir, bib = dataset
    bib.write_text(FIXTURE_BIB + REVIEW_BIB)
    path = findings_dir / "alpha2001first.yaml"
    text = STUDY_A.replace('source: "doi:10.0000/fixture.1"', 'source: "doi:10.0000/review.1"')
    text = text.replace("    sample: alpha2001first\n", "    sample: alpha2001first\n"
                        "    via: omega2010review\n", 1)
    path.write_text(text)
    return findings_dir, bib


def test_a_review_cited_by_via_is_not_an_orphan(via_dataset):
    assert findings.validate(*via_dataset) == []
    df = findings.load(*via_dataset)
    assert df["read_in_review"].tolist().count(True) == 1
    assert df.loc[df["read_in_review"], "via"].tolist() == ["omega2010review"]


def test_an_uncited_extra_bib_entry_is_still_an_orphan(dataset):
    findings_dir, bib = dataset
    bib.write_text(FIXTURE_BIB + REVIEW_BIB)
    assert findings.validate(findings_dir, bib) == [
        f"{findings.display_path(bib)}: omega2010review: no findings file "
        f"{findings.display_path(findings_dir)}/omega2010review.yaml"]


def test_via_source_must_be_the_review_doi(via_dataset):
    findings_dir, bib = via_dataset
    path = findings_dir / "alpha2001first.yaml"
    path.write_text(path.read_text().replace("doi:10.0000/review.1", "doi:10.0000/fixture.1"))
    assert findings.validate(findings_dir, bib) == [
        f"{findings.display_path(path)}: source: 'doi:10.0000/fixture.1' must be the review's "
        "DOI 'doi:10.0000/review.1' (finding f1 was read via omega2010review)"]


def test_via_needs_a_bib_entry(via_dataset):
    findings_dir, bib = via_dataset
    bib.write_text(FIXTURE_BIB)
    path = findings.display_path(findings_dir / "alpha2001first.yaml")
    assert findings.validate(findings_dir, bib) == [
        f"{path}: finding f1: via: 'omega2010review' not in {findings.display_path(bib)} "
        "(the review needs a BibTeX entry)"]


AWAITING_HEADER = ",".join(flow.AWAITING_COLUMNS) + "\n"
EXCLUDED_HEADER = ",".join(flow.EXCLUDED_COLUMNS) + "\n"


@pytest.mark.parametrize("row,expected", [
    ("alpha2001first,Alpha,2001,https://example.org/a,n,https://example.org/a,study,,",
     "citekey: alpha2001first is both included (data/findings/alpha2001first.yaml) and "
     "awaiting extraction: keep one"),
    ("zeta2003x,Zeta,2003,,n,https://example.org/z,study,,",
     "doi_or_address: '' must be an address (https://... or doi:10....)"),
    ("zeta2003x,Zeta,2003,https://example.org/z,pages,https://example.org/z,study,,",
     "missing: 'pages' is not one of n, full text, df, sample pairing"),
    ("zeta2003x,Zeta,03,https://example.org/z,n,https://example.org/z,study,,",
     "year: '03' must be a 4-digit year or empty"),
    ("zeta2003x,Zeta,2003,https://example.org/z,n,https://example.org/z,web,,",
     "identified_in: 'web' is not one of study, review, reference_list"),
])
def test_awaiting_problems_have_exact_messages(dataset, row, expected):
    findings_dir, bib = dataset
    path = findings_dir.parent / "awaiting.csv"
    path.write_text(AWAITING_HEADER + row + "\n")
    assert findings.validate(findings_dir, bib) == \
        [f"{findings.display_path(path)}: row 2: {expected}"]


def test_excluded_category_that_awaits_must_be_listed(dataset):
    findings_dir, bib = dataset
    (findings_dir.parent / "awaiting.csv").write_text(AWAITING_HEADER)
    path = findings_dir.parent / "excluded.csv"
    path.write_text(EXCLUDED_HEADER + "X-1,zeta2003x,Zeta,2003,https://example.org/z,"
                    "no n given,no_n,study\n")
    assert findings.validate(findings_dir, bib) == [
        f"{findings.display_path(path)}: row 2: category: no_n means the study awaits "
        f"extraction: list zeta2003x in {findings.display_path(findings_dir.parent / 'awaiting.csv')}"
        " or include it"]


def test_excluded_unknown_category(dataset):
    findings_dir, bib = dataset
    (findings_dir.parent / "awaiting.csv").write_text(AWAITING_HEADER)
    path = findings_dir.parent / "excluded.csv"
    path.write_text(EXCLUDED_HEADER + "X-1,,,,https://example.org/z,why,other,study\n")
    assert findings.validate(findings_dir, bib) == [
        f"{findings.display_path(path)}: row 2: category: 'other' is not one of "
        + ", ".join(flow.CATEGORIES)]


def test_shipped_logs_are_clean_and_rows_are_addressed():
    assert findings.validate() == []
    for row in flow.read_awaiting():
        assert row["doi_or_address"] and row["identified_at"] and row["missing"] in flow.MISSING


def test_strict_subset_and_how_read_rows_on_the_shipped_data():
    from metaalliance.analyses import coverage
    df = findings.load()
    strict = coverage.strict_subset(df)
    assert len(strict) and (strict["conversion"] == "exact").all()
    assert (strict["effect_type"] == "zero_order").all() and not strict["read_in_review"].any()
    rows = coverage.how_read_rows(df)
    assert sum(r["k"] for r in rows[:-1]) == rows[-1]["k"] == len(df)
    review = [r for r in rows if r["read"] == "review table"]
    assert sum(r["k"] for r in review) == int(df["read_in_review"].sum())
