"""The HTML and Markdown report, rendered from the Jinja2 templates in ``report/templates/``.

The templates and report.css are package data (pyproject ``[tool.setuptools.package-data]``).

HTML templates are autoescaped (every value is escaped unless it is ``Markup`` made by another
template); the Markdown templates are not escaped. ``StrictUndefined``: a name missing from the
context is an error, never an empty string in the report.
"""

from __future__ import annotations

from functools import lru_cache

from metaalliance.formatting import fmt_int, fmt_r
from metaalliance.report.analysis import Analysis
from metaalliance.report.drawing import Figure
from metaalliance.report.paragraph import summary_paragraph


@lru_cache(maxsize=2)
def environment(html: bool):
    """The Jinja2 environment for HTML (autoescape on) or Markdown (autoescape off)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("metaalliance.report", "templates"),
                             autoescape=html, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["md_cell"] = lambda cell: str(cell).replace("|", "\\|")
    return env


def render(template: str, /, **context) -> str:
    """Render ``templates/<template>``; ``*.html.j2`` autoescaped, ``*.md.j2`` not."""
    return environment(template.endswith(".html.j2")).get_template(template).render(**context)


def markup(html: str):
    """Already-rendered HTML (a table from table.html.j2) to be placed unescaped."""
    from markupsafe import Markup

    return Markup(html)


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
        finding_rows=finding_rows, coverage=_coverage(a),
        versions=", ".join(f"{k} {val}" for k, val in manifest["versions"].items()),
        notes=[(s.name, w) for s in _all_steps(a) for w in s.warnings],
        files=sorted(manifest["files"]))


def _coverage(a: Analysis) -> dict | None:
    """The coverage line of "Data analysed" (analyses/coverage.py), or None without counts."""
    if a.coverage is None:
        return None
    from metaalliance.analyses import coverage
    return {"sentence": coverage.coverage_sentence(a.coverage),
            "read_in_review": a.coverage.findings_read_in_review}


def _all_steps(a: Analysis) -> list:
    steps = [a.main, *a.separate, *a.models, a.aggregated, *a.regressions, a.leave_one_out,
             a.influence, a.cumulative, a.bias]
    if getattr(a, "selection", None) is not None:
        steps.append(a.selection)
    steps += [m.test for m in a.moderators]
    return steps


#: tables shown in the HTML report only (folded away there), not in report.md
HTML_ONLY_TABLES = ("leave_one_out", "influence", "cumulative")


def markdown_report(a: Analysis, tabs: list, figs: list) -> str:
    """The Markdown report (templates/report.md.j2, not escaped)."""
    return render("report.md.j2", title=a.config["report"]["title"], summary=summary_paragraph(a),
                  tables=[tab.markdown() for tab in tabs if tab.name not in HTML_ONLY_TABLES],
                  figs=figs, coverage=_coverage(a))
