"""The report's figures: which ones, drawn by metaalliance.figures, saved in every format."""

from __future__ import annotations

from dataclasses import dataclass

from metaalliance.formatting import fmt_est_ci, fmt_int, fmt_r
from metaalliance.report.analysis import Analysis
from metaalliance.report.paragraph import short_citation


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
    sel = getattr(a, "selection", None)
    if sel is not None and sel.ok and a.aggregated.ok:
        import numpy as np

        from metaalliance.analyses.selection import _pvalues
        from metaalliance.figures.selection_plot import selection_plot
        _, agg_fit, _ = a.aggregated.result
        pv = _pvalues(np.asarray(agg_fit.yi), np.sqrt(np.asarray(agg_fit.vi)), "greater")
        tick("figure selection function")
        files = _write_figure(out_dir, "selection_function",
                              lambda: selection_plot(sel.result, pvalues=pv), None, cfg)
        out.append(Figure("selection_function", "Fitted selection function (3PSM)",
                          "Relative likelihood that a sample is published given its one-sided "
                          "p-value, estimated by the three-parameter selection model; ticks "
                          "mark the samples' p-values.", files, "bias"))
    if a.coverage is not None:
        from metaalliance.figures import prisma
        tick("figure prisma")
        files = _write_figure(out_dir, "prisma",
                              lambda: prisma.prisma_figure(a.coverage).axes[0], None, cfg)
        out.append(Figure("prisma", "PRISMA 2020 flow diagram",
                          "Studies identified, read, excluded (by reason), awaiting extraction "
                          "and included, counted from data/findings, data/awaiting.csv and "
                          "data/excluded.csv.", files, "data"))
    if a.main.ok:
        _multiverse_figure(a, out_dir, out, tick)
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


def _multiverse_figure(a: Analysis, out_dir, out: list, tick) -> None:
    """The specification curve of the main analysis (issue 14), when it has >= 20
    specifications."""
    from metaalliance.analyses import multiverse
    from metaalliance.figures import specification_curve as sc

    tick("multiverse")
    got = multiverse.report_figure(a.data_main, a.config["model"]["cluster"])
    if got is None:
        return
    mv, _, caption = got
    factors = list(mv.factors) + list(multiverse.HOW)
    files = _write_figure(out_dir, "specification_curve",
                          lambda: sc.specification_curve(mv.results, factors).axes[0], None,
                          a.config)
    out.append(Figure("specification_curve", "Specification curve (multiverse analysis)",
                      caption, files, "multiverse"))
