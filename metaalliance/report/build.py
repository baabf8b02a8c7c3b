"""APA-style numbers, tables and the analysis report (``metaalliance report``).

This is the one place where numbers are rounded: results keep full precision, and the
formatters below turn them into text for tables, figures and the HTML report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from metaalliance.formatting import (MINUS, distinct_labels, fmt_ci, fmt_est_ci, fmt_int,  # noqa: F401
                                     fmt_num, fmt_p, fmt_pct, fmt_r, fmt_r_p)
from metaalliance.report.config import DEFAULT_CONFIG, load_config  # noqa: F401
from metaalliance.report.analysis import (Analysis, Moderator, Step, analyse, finding_labels,  # noqa: F401
                                          participants)
from metaalliance.report.paragraph import short_citation, summary_paragraph  # noqa: F401
from metaalliance.report.apa_tables import APA_COLUMNS, Table, tables  # noqa: F401


# --- figures ---------------------------------------------------------------------------------------

@dataclass
class Figure:
    name: str
    title: str
    caption: str
    files: list                    # paths relative to the report folder
    section: str


def _write_figure(out_dir, name: str, make_single, make_pages, cfg) -> list:
    """Write ``figures/name.<fmt>`` for every configured format; PDF gets pages when tall."""
    from metaalliance.figures import plots

    files = []
    dpi = int(cfg["report"]["dpi"])
    for fmt in cfg["report"]["formats"]:
        target = out_dir / "figures" / f"{name}.{fmt}"
        if fmt == "pdf" and make_pages is not None:
            written = plots.save_figure(make_pages(), target, dpi=dpi)
        else:
            written = plots.save_figure(make_single().figure, target, dpi=dpi)
        files += [str(p.relative_to(out_dir)) for p in written]
    return files


def figures(a: Analysis, out_dir, tick=None) -> list:
    """Every figure of the report, written under ``out_dir/figures``."""
    import math

    from metaalliance.figures import plots

    tick = tick or (lambda label: None)
    cfg = a.config
    rc = cfg["report"]
    cluster = cfg["model"]["cluster"]
    sort = None if rc["sort"] == "none" else rc["sort"]
    width = rc["width"]
    out = []

    def forest(name, title, caption, section, fit, data, **kw):
        tick(f"figure {name}")
        opts = dict(data=data, columns=rc["columns"], sort=sort, group_by=cluster, width=width,
                    **kw)
        files = _write_figure(out_dir, name, lambda: plots.forest_plot(fit, **opts),
                              lambda: plots.forest_figures(fit, **opts), cfg)
        out.append(Figure(name, title, caption, files, section))

    if a.main.ok:
        forest("forest_main", "Forest plot: symptom-type outcomes",
               "Findings with their 95% CIs (squares sized by the three-level model's weights), "
               "the pooled estimate (diamond) and its 95% prediction interval. Findings of one "
               "study are shown together under its label.", "overall", a.main.result,
               a.main.data)
    for step in a.separate:
        if step.ok:
            forest(f"forest_{step.name}", f"Forest plot: {step.name} findings",
                   f"{step.name.capitalize()} outcomes, pooled apart from symptom outcomes.",
                   "overall", step.result, step.data)
    for mod in a.moderators:
        label = mod.field.replace("_", " ")
        tick(f"figure moderator_{mod.field}")
        files = _write_figure(
            out_dir, f"moderator_{mod.field}",
            lambda m=mod: plots.forest_plot(m.overall, data=m.data, subgroups=m.subgroups,
                                            show_studies=False, columns=["ci"], width="onehalf"),
            None, cfg)
        out.append(Figure(f"moderator_{mod.field}", f"Estimates by {label}",
                          f"One diamond per level of {label} (95% CI).", files, "moderators"))
        forest(f"forest_by_{mod.field}", f"Forest plot by {label}",
               f"Findings grouped by {label}; each block has its own estimate (three-level "
               "model with the moderator), the test of differences is at the bottom.",
               "moderators", mod.overall, mod.data, subgroups=mod.subgroups)
    for step in a.regressions:
        if not step.ok:
            continue
        fld = step.result.coefficients[1].name
        tick(f"figure bubble_{fld}")
        b0, b1 = (c.estimate for c in step.result.coefficients)
        x = step.data[fld].to_numpy(dtype=float)
        files = _write_figure(
            out_dir, f"bubble_{fld}",
            lambda: plots.bubble_plot(x, step.data["yi"], step.data["vi"],
                                      fit=(b0, b1, step.result.vcov),
                                      tau2=float(sum(step.result.sigma2)),
                                      xlabel=fld.replace("_", " ").capitalize()), None, cfg)
        out.append(Figure(f"bubble_{fld}", f"Meta-regression on {fld}",
                          "Findings (circle area proportional to the weight) with the "
                          "three-level meta-regression line and its 95% confidence band.",
                          files, "moderators"))
    if a.leave_one_out.ok:
        tick("figure leave_one_out")
        files = _write_figure(
            out_dir, "leave_one_out",
            lambda: plots.leave_one_out_plot(a.leave_one_out.result,
                                             overall=a.aggregated.result[1]),
            lambda: plots.leave_one_out_plot(a.leave_one_out.result,
                                             overall=a.aggregated.result[1], pages=True),
            cfg)
        out.append(Figure("leave_one_out", "Leave-one-out analysis",
                          "The pooled estimate with each sample left out in turn.", files,
                          "sensitivity"))
    if a.cumulative.ok:
        tick("figure cumulative")
        files = _write_figure(
            out_dir, "cumulative",
            lambda: plots.cumulative_forest_plot(a.cumulative.result, overall=a.aggregated.result[1]),
            lambda: plots.cumulative_forest_plot(a.cumulative.result,
                                                 overall=a.aggregated.result[1], pages=True),
            cfg)
        out.append(Figure("cumulative", "Cumulative meta-analysis by publication year",
                          "Each row pools the samples published up to that one.", files,
                          "sensitivity"))
    if a.aggregated.ok:
        _, agg_fit, _ = a.aggregated.result
        tf = a.bias.result.trimfill if a.bias.ok else None
        tick("figure funnel")
        files = _write_figure(out_dir, "funnel",
                              lambda: plots.funnel_plot(agg_fit, trimfill=tf, width="onehalf"),
                              None, cfg)
        out.append(Figure("funnel", "Contour-enhanced funnel plot",
                          "One composite effect per sample against its standard error; shaded "
                          "regions show where an effect would be significant (two-sided); open "
                          "circles are samples imputed by trim and fill.", files, "bias"))
    pubs = [c for c in a.comparison if c["r_published"] is not None]
    if pubs and a.main.ok:
        tick("figure comparison")
        est = [math.atanh(c["r_published"]) for c in pubs]
        lo = [math.atanh(c["ci_lower_published"]) if c["ci_lower_published"] is not None else e
              for c, e in zip(pubs, est)]
        hi = [math.atanh(c["ci_upper_published"]) if c["ci_upper_published"] is not None else e
              for c, e in zip(pubs, est)]
        ci_text = [fmt_est_ci(c["r_published"], c["ci_lower_published"], c["ci_upper_published"])
                   if c["ci_lower_published"] is not None else f"{fmt_r(c['r_published'])} (no CI)"
                   for c in pubs]
        table = plots.IntervalTable(
            labels=[f"{short_citation(c['authors'], c['year'])}, {c['population']}"
                    for c in pubs],
            estimate=est, ci_lower=lo, ci_upper=hi,
            extra={"k": [fmt_int(c["k_published"]) if c["k_published"] else "" for c in pubs],
                   "ci": ci_text},
            extra_titles={"k": "k"})
        files = _write_figure(
            out_dir, "comparison",
            lambda: plots.interval_plot(table, overall=a.main.result,
                                        overall_label="This dataset (three-level)",
                                        label_title="Published synthesis"), None, cfg)
        out.append(Figure("comparison", "Published syntheses and this dataset",
                          "Pooled correlations reported by published meta-analyses (reference "
                          "points, never pooled) and the three-level estimate of the curated "
                          "findings (diamond).", files, "comparison"))
    return out


# --- HTML and Markdown: rendered from templates/report.html.j2 and report.md.j2 ----------------

def _figure_context(fig: Figure, number: int, out_dir) -> dict:
    png = next((f for f in fig.files if f.endswith(".png")), None)
    return {"name": fig.name, "number": number, "title": fig.title, "caption": fig.caption,
            "links": [(f, f.rsplit(".", 1)[-1].upper()) for f in fig.files],
            "png": png, "pdf": next((f for f in fig.files if f.endswith(".pdf")), png),
            "width": _display_width(out_dir / png) if png is not None else None}


#: screen pixels per mm of figure width: 7-pt text reads at about 13 px
PX_PER_MM = 5.5


def _display_width(png_path) -> int:
    from PIL import Image

    with Image.open(png_path) as im:
        dpi = im.info.get("dpi", (300, 300))[0] or 300
        return int(round(im.size[0] / float(dpi) * 25.4 * PX_PER_MM))


def html_report(a: Analysis, tabs: list, figs: list, out_dir, manifest: dict) -> str:
    """The HTML report (templates/report.html.j2, autoescaped)."""
    from metaalliance.report.render import markup, render

    cfg = a.config
    sections = {"overall": [], "moderators": []}
    for f in figs:
        sections.setdefault(f.section, []).append(f.name)
    d = a.data_all
    cluster = cfg["model"]["cluster"]
    finding_rows = [{"label": str(r.label), "finding_id": str(r.finding_id), "n": fmt_int(r.n),
                     "r": fmt_r(r.r), "domain": str(r.outcome_domain),
                     "instrument": str(r.instrument), "rater": str(r.rater),
                     "source": str(r.source), "locator": str(r.locator)}
                    for r in d.sort_values(["label", "finding_id"]).itertuples()]
    return render(
        "report.html.j2",
        title=cfg["report"]["title"], manifest=manifest,
        commit=(manifest.get("git") or {}).get("commit", "n/a"),
        summary=summary_paragraph(a), separate=cfg["outcomes"]["separate"],
        method=cfg["model"]["method"], test=cfg["model"]["test"], cluster=cluster,
        tables={tab.name: markup(tab.html()) for tab in tabs},
        table_titles={tab.name: tab.title for tab in tabs},
        figs={f.name: _figure_context(f, i + 1, out_dir) for i, f in enumerate(figs)},
        sections=sections,
        moderators=[{"field": m.field, "dropped": m.dropped} for m in a.moderators],
        skipped=a.skipped,
        not_run=[s for s in (a.leave_one_out, a.cumulative) if not s.ok],
        references=[c["citation"] for c in a.comparison if c["citation"]],
        data={"findings": len(d), "studies": d["citekey"].nunique(),
              "samples": d[cluster].nunique(), "main": len(a.data_main)},
        finding_rows=finding_rows,
        versions=", ".join(f"{k} {val}" for k, val in manifest["versions"].items()),
        notes=[(s.name, w) for s in _all_steps(a) for w in s.warnings],
        files=sorted(manifest["files"]))


def _all_steps(a: Analysis) -> list:
    steps = [a.main, *a.separate, *a.models, a.aggregated, *a.regressions, a.leave_one_out,
             a.influence, a.cumulative, a.bias]
    steps += [m.test for m in a.moderators]
    return steps


#: tables shown in the HTML report only (folded away there), not in report.md
HTML_ONLY_TABLES = ("leave_one_out", "influence", "cumulative")


def markdown_report(a: Analysis, tabs: list, figs: list) -> str:
    """The Markdown report (templates/report.md.j2, not escaped)."""
    from metaalliance.report.render import render

    return render("report.md.j2", title=a.config["report"]["title"], summary=summary_paragraph(a),
                  tables=[tab.markdown() for tab in tabs if tab.name not in HTML_ONLY_TABLES],
                  figs=figs)


# --- the report job: read, analyse, write atomically ------------------------------------------------

MANIFEST_GENERATOR = "metaalliance report"


def _versions() -> dict:
    import platform
    from importlib import metadata

    from metaalliance import __version__

    out = {"python": platform.python_version(), "metaalliance": __version__}
    for name in ("numpy", "scipy", "pandas", "matplotlib", "statsmodels", "pymare", "tqdm",
                 "pyyaml", "bibtexparser"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _git(root) -> dict | None:
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_out_dir(out, data_dirs) -> "Path":
    """The report folder: never inside the curated data, never a folder that is not a report."""
    import json
    from pathlib import Path

    from metaalliance.errors import OptionError
    from metaalliance.dataset.findings import is_inside

    out = Path(out)
    for folder in data_dirs:
        if is_inside(out, folder):
            raise OptionError(f"--out {out}: inside {folder}, the curated data; write the "
                              "report elsewhere (e.g. --out results)")
    if out.exists():
        if not out.is_dir():
            raise OptionError(f"--out {out}: exists and is not a folder")
        if any(out.iterdir()):
            manifest = out / "manifest.json"
            try:
                ok = json.loads(manifest.read_text())["generator"] == MANIFEST_GENERATOR
            except (OSError, ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                raise OptionError(f"--out {out}: the folder is not empty and holds no earlier "
                                  "report (manifest.json); it is left alone: choose another")
    if not out.resolve().parent.is_dir():
        raise OptionError(f"--out {out}: folder {out.resolve().parent} does not exist")
    return out


def _replace_dir(tmp, out) -> None:
    """Move the finished report into place: the old one is swapped out, then removed."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    out = Path(out)
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.resolve().parent))
        os.replace(out, old / out.name)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old / out.name, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def run(config=None, out="results", *, quiet: bool = False, argv=None) -> "Path":
    """``metaalliance report``: analyse the curated data as ``config`` says and write the
    report folder ``out`` (built in a temporary folder beside it, then renamed)."""
    import json
    import shutil
    import sys
    import tempfile
    import time
    from pathlib import Path

    import pandas as pd
    from tqdm import tqdm

    from metaalliance.dataset import findings
    from metaalliance.dataset.fileio import atomic_write

    start = time.monotonic()
    cfg = load_config(config)
    base = Path(config).resolve().parent if config is not None else Path.cwd()

    def resolve(value, default):
        if value is None:
            return default
        p = Path(value)
        return p if p.is_absolute() else base / p

    findings_dir = resolve(cfg["data"]["findings"], findings.DEFAULT_FINDINGS)
    bib = resolve(cfg["data"]["bib"], findings.DEFAULT_BIB)
    data_dirs = {findings.DEFAULT_FINDINGS.parent, Path(findings_dir).parent
                 if Path(findings_dir).name == "findings" else Path(findings_dir)}
    out = check_out_dir(out, sorted(data_dirs))
    published_path = resolve(cfg["data"]["published"], None)

    steps = 12 + len(cfg["moderators"]["fields"]) * 3 + len(cfg["moderators"]["regression"]) * 2
    bar = tqdm(total=steps, desc="report", unit="step", file=sys.stderr, disable=quiet,
               dynamic_ncols=True, leave=True)

    def tick(label: str) -> None:
        bar.set_postfix_str(label, refresh=False)
        if bar.n < bar.total:
            bar.update(1)

    try:
        tick("loading the findings")
        df = findings.load(findings_dir, bib)
        published = None
        if published_path is not None and published_path.is_file():
            published = pd.read_csv(published_path, dtype={"key": str})
        analysis = analyse(df, cfg, published, tick)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.resolve().parent))
        try:
            (tmp / "tables").mkdir()
            (tmp / "figures").mkdir()
            figs = figures(analysis, tmp, tick)
            tick("tables and report")
            tabs = tables(analysis)
            for tab in tabs:
                atomic_write(tmp / "tables" / f"{tab.name}.csv", tab.csv())
                atomic_write(tmp / "tables" / f"{tab.name}.md", tab.markdown())
            cols = [c for c in findings.COLUMNS if c in analysis.data_all.columns]
            frame = analysis.data_all[cols].assign(
                in_main=analysis.data_all["outcome_domain"].isin(
                    analysis.data_main["outcome_domain"].unique()))
            atomic_write(tmp / "tables" / "findings.csv", frame.to_csv(index=False))
            atomic_write(tmp / "report.md", markdown_report(analysis, tabs, figs))
            manifest = {
                "generator": MANIFEST_GENERATOR,
                "versions": _versions(),
                "config_file": str(config) if config is not None else None,
                "config_sha256": _sha256(Path(config)) if config is not None else None,
                "options": {k: v for k, v in cfg.items() if not k.startswith("_")},
                "data": {"findings": findings.display_path(findings_dir),
                         "bib": findings.display_path(bib),
                         "hash": findings.data_hash(findings_dir, bib),
                         "findings_total": int(len(analysis.data_all)),
                         "findings_main": int(len(analysis.data_main)),
                         "studies": int(analysis.data_all["citekey"].nunique()),
                         "yi_vi_hash_main": (analysis.main.result.provenance.get("data_hash")
                                             if analysis.main.ok else None)},
                "published_syntheses": ({"file": findings.display_path(published_path),
                                         "sha256": _sha256(published_path)}
                                        if published is not None else None),
                "git": _git(findings.REPO_ROOT),
                "command": list(argv) if argv is not None else None,
                "main_result": analysis.main.result.to_dict() if analysis.main.ok else None,
                "files": {},
            }
            html_files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
            manifest["files"] = {f: None for f in html_files + ["report.html"]}
            atomic_write(tmp / "report.html", html_report(analysis, tabs, figs, tmp, manifest))
            manifest["files"] = {str(p.relative_to(tmp)): _sha256(p)
                                 for p in sorted(tmp.rglob("*")) if p.is_file()}
            manifest["seconds"] = round(time.monotonic() - start, 1)
            atomic_write(tmp / "manifest.json",
                         json.dumps(manifest, indent=2, allow_nan=False, default=_json_default))
            _replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        bar.update(bar.total - bar.n)
    finally:
        bar.close()
    return out


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
