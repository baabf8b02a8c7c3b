"""The report: APA formatting, configuration, and `metaalliance report` end to end.

The end-to-end run uses a SIMULATED dataset written by seeded code into a temporary folder
(YAML study files + BibTeX, the shipped format); it never leaves tests/. Its numbers are checked
against the engine called directly on the same rows, and every link of the HTML must resolve.
"""

from __future__ import annotations

import csv
import json
import math
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from metaalliance.dataset import findings
from metaalliance.engine import models
from metaalliance import report
from metaalliance.errors import OptionError
from metaalliance.formatting import fmt_ci, fmt_int, fmt_num, fmt_p, fmt_pct, fmt_r

REPO = Path(__file__).resolve().parent.parent
#: numbers that pass through CSV as repr(float) come back bit-identical
EXACT = 0.0


# --- APA formatting ---------------------------------------------------------------------------

def test_apa_numbers():
    assert fmt_r(0.278) == ".28"
    assert fmt_r(-0.05) == "\u2212.05"
    assert fmt_r(1.0) == "1.00"
    assert fmt_r(-0.001) == ".00"  # no negative zero
    assert fmt_ci(0.19, 0.31) == "[.19, .31]"
    assert fmt_p(0.0004) == "p < .001"
    assert fmt_p(0.0234) == "p = .023"
    assert fmt_p(0.5) == "p = .500"
    assert fmt_int(1177) == "1,177"
    assert fmt_num(-1.234, 2) == "\u22121.23"
    assert fmt_pct(48.66) == "48.7%"
    assert fmt_r(None) == "" and fmt_r(float("nan")) == ""


def test_short_citations():
    assert report.short_citation("Horvath, Symonds", 1991) == "Horvath & Symonds (1991)"
    assert report.short_citation("Flückiger, Del Re, Wampold, Horvath", 2018) == \
        "Flückiger et al. (2018)"
    assert report.short_citation("Flückiger et al.", 2019) == "Flückiger et al. (2019)"


# --- configuration ----------------------------------------------------------------------------

def test_shipped_config_is_complete_and_valid():
    cfg = report.load_config(REPO / "analysis.toml")
    assert cfg["model"] == {"method": "REML", "test": "z", "level": 95, "cluster": "sample",
                            "control": "metafor"}
    assert cfg["outcomes"]["separate"] == ["adherence", "retention", "dropout"]
    keys = {c["key"] for c in cfg["comparison"]}
    with open(REPO / "data" / "published_syntheses.csv", encoding="utf-8") as fh:
        published = {row["key"] for row in csv.DictReader(fh)}
    assert keys == published


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nmethod = 'REML'\nclustr = 'sample'\n")
    with pytest.raises(OptionError, match=re.escape(
            f"{bad} [model]: unknown option(s) clustr; allowed: method, test, level, cluster")):
        report.load_config(bad)
    bad.write_text("[model]\nmethod = 'DL'\n")
    with pytest.raises(OptionError, match="model.method: 'DL' is not one of REML, ML"):
        report.load_config(bad)
    bad.write_text("[model\n")
    with pytest.raises(OptionError, match="not valid TOML"):
        report.load_config(bad)
    with pytest.raises(OptionError, match="file not found"):
        report.load_config(tmp_path / "missing.toml")


# --- a simulated dataset in the shipped file format ---------------------------------------------

def write_simulated_dataset(root: Path, n_studies: int = 16, seed: int = 5):
    """SIMULATED studies (r about .25): YAML study files + BibTeX, as data/findings holds."""
    rng = np.random.default_rng(seed)
    fdir = root / "data" / "findings"
    fdir.mkdir(parents=True)
    bib = []
    for s in range(n_studies):
        year = 1990 + 2 * s
        key = f"simulated{year}s{s}"
        bib.append(f"@article{{{key},\n  author = {{Simulated{chr(65 + s)}, Sam and Other, Oz "
                   f"and Third, Tia}},\n  title = {{Simulated study {s}}},\n  journal = "
                   f"{{Simulated}},\n  year = {{{year}}}\n}}\n")
        n = int(rng.integers(30, 300))
        lines = [f"citekey: {key}", f"population: {'adult' if s % 4 else 'youth'}",
                 f"diagnosis: {['depression', 'anxiety'][s % 2]}", "setting: outpatient",
                 "modality: individual", f"treatment: {['cbt', 'psychodynamic'][s % 3 == 0]}",
                 "country: unspecified", f"design: {['rct', 'naturalistic'][s % 2]}",
                 'source: "url:https://example.org/simulated"', "findings:"]
        n_findings = 1 + s % 3
        for f in range(n_findings):
            domain = "adherence" if (s % 5 == 0 and f == n_findings - 1) else "symptoms"
            r = math.tanh(rng.normal(0.25, 0.1) + rng.normal(0, 1 / math.sqrt(n - 3)))
            lines += [f"  - id: f{f + 1}", f"    n: {n}",
                      f"    statistic: {{type: r, value: {r:.3f}}}",
                      "    positive_is_better: true",
                      f"    instrument: {['WAI', 'WAI-S', 'CALPAS'][(s + f) % 3]}",
                      f"    rater: {['client', 'therapist'][f % 2]}",
                      f"    timing: {['early', 'late'][(s + f) % 2]}",
                      f"    outcome: {{measure: BDI-II, domain: {domain}}}",
                      "    effect_type: zero_order", "    conversion: exact",
                      '    locator: "simulated"', f"    sample: {key}"]
        (fdir / f"{key}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "references.bib").write_text("\n".join(bib), encoding="utf-8")
    return fdir, root / "references.bib"


def write_config(root: Path, fdir: Path, bib: Path, extra: str = "") -> Path:
    shipped = (REPO / "analysis.toml").read_text(encoding="utf-8")
    shipped = shipped.replace('published = "data/published_syntheses.csv"',
                              f'published = "{REPO / "data" / "published_syntheses.csv"}"\n'
                              f'findings = "{fdir}"\nbib = "{bib}"')
    shipped = shipped.replace('formats = ["pdf", "png"]', 'formats = ["pdf", "png"]')
    shipped = shipped.replace("dpi = 300", "dpi = 100")  # small PNGs: the test is about content
    path = root / "analysis.toml"
    path.write_text(shipped + textwrap.dedent(extra), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    fdir, bib = write_simulated_dataset(root)
    config = write_config(root, fdir, bib)
    out = report.run(config, root / "results", quiet=True)
    return root, fdir, bib, config, out


def read_csv(path):
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_report_files(built):
    root, fdir, bib, config, out = built
    for name in ("report.html", "report.md", "manifest.json", "tables/overall.csv",
                 "tables/overall.md", "tables/moderators.csv", "tables/bias.md",
                 "tables/comparison.csv", "tables/findings.csv", "figures/forest_main.pdf",
                 "figures/forest_main.png", "figures/funnel.pdf", "figures/funnel.png",
                 "figures/cumulative.png", "figures/leave_one_out.png", "figures/bubble_year.png",
                 "figures/comparison.png"):
        assert (out / name).is_file(), name
    assert not [p for p in root.iterdir() if p.name.startswith(".results.")]  # no temp left


def test_main_estimate_is_the_three_level_model_on_symptom_outcomes(built):
    root, fdir, bib, config, out = built
    df = findings.load(fdir, bib)
    main = df[~df["outcome_domain"].isin(["adherence", "retention", "dropout"])]
    fit = models.three_level(main["yi"], main["vi"], main["sample"].astype(str))
    row = read_csv(out / "tables" / "overall.csv")[0]
    assert float(row["r"]) == math.tanh(fit.estimate)
    assert float(row["ci_lower"]) == math.tanh(fit.ci_lower)
    assert float(row["pi_upper"]) == math.tanh(fit.pi_upper)
    assert int(row["k"]) == len(main) and int(row["studies"]) == main["sample"].nunique()
    assert int(row["n"]) == int(main.groupby("sample")["n"].max().sum())
    md = (out / "tables" / "overall.md").read_text(encoding="utf-8")
    cells = f"| {fmt_r(math.tanh(fit.estimate))} | {fmt_ci(math.tanh(fit.ci_lower), math.tanh(fit.ci_upper))} |"
    assert cells in md
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["main_result"]["estimate"] == fit.estimate
    summary = (out / "report.md").read_text(encoding="utf-8")
    assert (f"r = {fmt_r(math.tanh(fit.estimate))}, 95% CI "
            f"{fmt_ci(math.tanh(fit.ci_lower), math.tanh(fit.ci_upper))}") in summary
    adherence = read_csv(out / "tables" / "overall.csv")[1]
    assert adherence["analysis"] == "Adherence (analysed apart)"
    assert int(adherence["k"]) == int((df["outcome_domain"] == "adherence").sum())


def test_moderators_match_the_engine(built):
    root, fdir, bib, config, out = built
    df = findings.load(fdir, bib)
    main = df[df["outcome_domain"] == "symptoms"].reset_index(drop=True)
    rows = [r for r in read_csv(out / "tables" / "moderators.csv") if r["moderator"] == "rater"]
    levels = sorted(main["rater"].unique())
    X = np.column_stack([np.ones(len(main))] + [(main["rater"] == lv).to_numpy(float)
                                                 for lv in levels[1:]])
    fit = models.three_level(main["yi"], main["vi"], main["sample"].astype(str), X=X)
    assert float(rows[0]["qm"]) == pytest.approx(fit.qm, rel=1e-12)
    assert [r["level"] for r in rows[1:]] == levels
    assert [int(r["k"]) for r in rows[1:]] == [int((main["rater"] == lv).sum()) for lv in levels]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Moderators not tested" in html and "setting" in html  # one level only: not tested


def test_published_syntheses_are_reference_points_never_pooled(built):
    root, fdir, bib, config, out = built
    rows = read_csv(out / "tables" / "comparison.csv")
    published = read_csv(REPO / "data" / "published_syntheses.csv")
    assert [r["key"] for r in rows] == [p["key"] for p in published]
    for r, p in zip(rows, published):
        assert float(r["r_published"]) == float(p["pooled_r"])
    df = findings.load(fdir, bib)
    overall = read_csv(out / "tables" / "overall.csv")[0]
    assert int(overall["k"]) == int((df["outcome_domain"] == "symptoms").sum())
    adult = [r for r in rows if r["key"] == "fluckiger2018alliance"][0]
    part = df[(df["outcome_domain"] == "symptoms") & (df["population"] == "adult")]
    fit = models.three_level(part["yi"], part["vi"], part["sample"].astype(str))
    assert float(adult["r"]) == math.tanh(fit.estimate)


def test_every_link_of_the_html_resolves_and_the_manifest_hashes_match(built):
    import hashlib

    root, fdir, bib, config, out = built
    html = (out / "report.html").read_text(encoding="utf-8")
    links = set(re.findall(r"(?:href|src)='([^'#:]+)'", html))
    assert len(links) > 20
    for link in links:
        assert (out / link).is_file(), link
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generator"] == "metaalliance report"
    assert manifest["data"]["hash"] == findings.data_hash(fdir, bib)
    assert {"numpy", "scipy", "pandas", "matplotlib", "metaalliance"} <= set(manifest["versions"])
    assert manifest["options"]["model"]["method"] == "REML"
    for name, digest in manifest["files"].items():
        if name != "manifest.json":
            assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, name


def test_refuses_an_out_folder_inside_data(built, tmp_path):
    root, fdir, bib, config, out = built
    with pytest.raises(OptionError, match="inside .*data.*the curated data"):
        report.run(config, fdir.parent / "results", quiet=True)
    with pytest.raises(OptionError, match="inside .*the curated data"):
        report.run(config, findings.DEFAULT_FINDINGS.parent / "results", quiet=True)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.docx").write_text("not a report")
    with pytest.raises(OptionError, match="not empty and holds no earlier report"):
        report.run(config, other, quiet=True)
    assert (other / "thesis.docx").read_text() == "not a report"


def test_a_failed_run_leaves_the_previous_report_in_place(built, monkeypatch):
    root, fdir, bib, config, out = built
    before = (out / "manifest.json").read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure while drawing")

    monkeypatch.setattr(report.build, "figures", broken)
    with pytest.raises(RuntimeError, match="simulated failure"):
        report.run(config, out, quiet=True)
    assert (out / "manifest.json").read_bytes() == before
    assert not [p for p in root.iterdir() if p.name.startswith(".results.")]


def test_cli_report(built, tmp_path):
    from metaalliance.cli import main

    root, fdir, bib, config, out = built
    assert main(["report", "--config", str(config), "--out", str(fdir / "x"), "--quiet"]) == 1


# --- the templates (report/templates/*.j2): content, escaping, packaging --------------------------

def _analysis(config, fdir, bib, relabel=None):
    import pandas as pd

    cfg = report.load_config(config)
    df = findings.load(fdir, bib)
    if relabel is not None:
        df["label"] = df["label"].where(df.index != df.index[0], relabel)
    published = pd.read_csv(REPO / "data" / "published_syntheses.csv", dtype={"key": str})
    return report.analyse(df, cfg, published)


def test_the_html_and_markdown_show_every_table_figure_and_paragraph(built):
    from markupsafe import escape

    root, fdir, bib, config, out = built
    html = (out / "report.html").read_text(encoding="utf-8")
    md = (out / "report.md").read_text(encoding="utf-8")
    a = _analysis(config, fdir, bib)
    tabs = report.tables(a)
    assert len(tabs) >= 8
    summary = report.summary_paragraph(a)
    assert f"<p class='summary'>{escape(summary)}</p>" in html
    assert f"## Results summary\n\n{summary}\n" in md
    for tab in tabs:
        assert f"<table id='table-{tab.name}'><caption>{escape(tab.title)}</caption>" in html
        assert f"<a href='tables/{tab.name}.csv'>CSV</a>" in html
        for cells in tab.shown().text_rows():
            row = "".join(f"<td class='[tn]'>{re.escape(str(escape(c)))}</td>" for c in cells)
            assert re.search(row, html), (tab.name, cells)
        if tab.note:
            assert f"<em>Note.</em> {escape(tab.note)}</p>" in html
        shown_in_md = tab.name not in ("leave_one_out", "influence", "cumulative")
        assert (tab.markdown() in md) == shown_in_md, tab.name
    pngs = sorted((out / "figures").glob("*.png"))
    assert len(pngs) >= 8
    for number, name in enumerate(re.findall(r"<figure id='fig-([a-z_]+)'>", html), start=1):
        assert f"<figure id='fig-{name}'>" in html and f"<b>Figure {number}.</b>" in html
        assert f"- Figure {number}. " in md and f"(figures/{name}.png)" in md
    assert {p.stem for p in pngs} == set(re.findall(r"<figure id='fig-([a-z_]+)'>", html))
    for fld, why in a.skipped:
        assert f"<li><b>{escape(fld)}</b>: {escape(why)}</li>" in html
    for fid in a.data_all["finding_id"]:
        assert f"<td class='t'>{escape(fid)}</td>" in html


def test_html_is_autoescaped_and_markdown_is_not(built):
    root, fdir, bib, config, out = built
    evil = "<script>alert('x')</script> & Co (2020)"
    a = _analysis(config, fdir, bib, relabel=evil)
    a.config["report"]["title"] = "Alliance <b>& outcome</b>"
    tabs = report.tables(a)
    manifest = {"versions": {"metaalliance": "0"}, "data": {"hash": "0" * 64}, "git": None,
                "config_file": None, "files": {}}
    html = report.html_report(a, tabs, [], out, manifest)
    assert "<script>" not in html and "<b>&" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co (2020)" in html
    assert "<h1>Alliance &lt;b&gt;&amp; outcome&lt;/b&gt;</h1>" in html
    md = report.markdown_report(a, tabs, [])
    assert md.startswith("# Alliance <b>& outcome</b>\n")
    assert "&amp;" not in md and "&lt;" not in md


def test_templates_and_css_ship_as_package_data():
    import fnmatch
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["metaalliance.report"]
    folder = REPO / "metaalliance" / "report"
    files = [p.relative_to(folder).as_posix() for p in (folder / "templates").iterdir()]
    assert "templates/report.css" in files and "templates/report.html.j2" in files
    for name in files:
        assert any(fnmatch.fnmatch(name, g) for g in globs), f"{name} would not be installed"
    assert "jinja2" in " ".join(pyproject["project"]["dependencies"])


def test_data_section_shows_coverage_how_read_and_the_strict_sensitivity_row(built):
    """Issue 12: coverage sentence, findings by how read, PRISMA figure, and the main model on
    zero-order exact findings from the studies' own texts (all simulated findings are such, so
    that row equals the primary three-level model)."""
    root, fdir, bib, config, out = built
    html = (out / "report.html").read_text(encoding="utf-8")
    n_studies = len(list(fdir.glob("*.yaml")))
    assert f"Coverage: {n_studies} studies included, 0 awaiting extraction" in html
    assert (out / "figures/prisma.pdf").is_file() and (out / "figures/prisma.png").is_file()
    how = read_csv(out / "tables/how_read.csv")
    assert how[-1]["read"] == "all findings"
    assert [r["read"] for r in how[:-1]] == ["study's own text"]
    models_rows = {r["analysis"]: r for r in read_csv(out / "tables/models.csv")}
    from metaalliance.analyses import coverage
    strict, primary = models_rows[coverage.STRICT_NAME], models_rows["three-level (primary)"]
    assert strict["k"] == primary["k"]
    assert float(strict["r"]) == pytest.approx(float(primary["r"]), rel=1e-12)
