"""The report's tables (``Table``, ``tables``): raw values for CSV, APA text for Markdown, HTML."""

from __future__ import annotations

from dataclasses import dataclass

from metaalliance.formatting import (fmt_ci, fmt_est_ci, fmt_int, fmt_num, fmt_p, fmt_pct, fmt_r,
                                     fmt_r_p)
from metaalliance.report.analysis import Analysis, participants
from metaalliance.report.paragraph import short_citation


@dataclass
class Table:
    """Rows of raw values; ``columns`` = (key, header, kind) with kind one of text, int, r, ci,
    pi, p, num2, num3, pct, qdf. CSV keeps full precision; Markdown and HTML are APA-rounded."""

    name: str
    title: str
    columns: list
    rows: list
    note: str = ""
    csv_columns: list = None       # raw keys written to CSV (default: every key of the rows)

    def cell(self, row: dict, key: str, kind: str) -> str:
        value = row.get(key)
        if kind == "text":
            return "" if value is None else str(value)
        if kind == "int":
            return fmt_int(value)
        if kind == "r":
            return fmt_r(value)
        if kind in ("ci", "pi"):
            lo, hi = row.get(f"{kind}_lower"), row.get(f"{kind}_upper")
            return "" if lo is None or hi is None else fmt_ci(lo, hi)
        if kind == "ci_z":
            lo, hi = row.get("ci_lower"), row.get("ci_upper")
            return "" if lo is None or hi is None else fmt_ci(lo, hi, 3, r=False)
        if kind == "ci_pub":
            lo, hi = row.get("ci_lower_published"), row.get("ci_upper_published")
            return "" if lo is None or hi is None else fmt_ci(lo, hi)
        if kind == "p":
            return fmt_r_p(value)
        if kind == "num2":
            return fmt_num(value, 2)
        if kind == "num3":
            return fmt_num(value, 3)
        if kind == "pct":
            return fmt_pct(value)
        if kind == "qdf":
            q, df = row.get("q"), row.get("q_df")
            return "" if q is None else f"{fmt_num(q)} ({df})"
        raise ValueError(kind)

    def text_rows(self) -> list:
        return [[self.cell(r, key, kind) for key, _, kind in self.columns] for r in self.rows]

    def shown(self) -> "Table":
        """The table as read: an untitled column with nothing in it is left out."""
        rows = self.text_rows()
        keep = [i for i, (_, head, _) in enumerate(self.columns)
                if head or any(r[i] for r in rows)]
        return Table(self.name, self.title, [self.columns[i] for i in keep], self.rows,
                     self.note, self.csv_columns)

    def markdown(self) -> str:
        from metaalliance.report.render import render

        t = self.shown()
        return render("table.md.j2", title=self.title, note=self.note,
                      heads=[h for _, h, _ in t.columns],
                      aligns=["---" if kind == "text" else "---:" for _, _, kind in t.columns],
                      text_rows=t.text_rows())

    def html(self) -> str:
        from metaalliance.report.render import render

        t = self.shown()
        cls = ["t" if kind == "text" else "n" for _, _, kind in t.columns]
        return render("table.html.j2", name=self.name, title=self.title, note=self.note,
                      heads=[(h, c) for (_, h, _), c in zip(t.columns, cls)],
                      rows=[(bool(r.get("_group")), list(zip(cells, cls)))
                            for r, cells in zip(t.rows, t.text_rows())])

    def csv(self) -> str:
        import csv
        import io

        keys = self.csv_columns or [k for k in dict.fromkeys(k for r in self.rows for k in r)
                                    if not k.startswith("_")]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(keys)
        for r in self.rows:
            writer.writerow(["" if r.get(k) is None else
                             (repr(r[k]) if isinstance(r[k], float) else r[k]) for k in keys])
        return buf.getvalue()


APA_COLUMNS = [("k", "k", "int"), ("studies", "Studies", "int"), ("n", "N", "int"),
               ("r", "r", "r"), ("ci", "95% CI", "ci"), ("pi", "95% PI", "pi")]


def _fit_row(name: str, fit, data, cluster: str) -> dict:
    """APA row of a fitted model, raw values (r scale) for the CSV."""
    import math

    row = {"analysis": name, "k": int(fit.k),
           "studies": int(getattr(fit, "n_clusters", None) or data[cluster].nunique())
           if data is not None else None,
           "n": participants(data, cluster) if data is not None else None,
           "r": math.tanh(fit.estimate), "ci_lower": math.tanh(fit.ci_lower),
           "ci_upper": math.tanh(fit.ci_upper), "z": fit.estimate, "se": fit.se,
           "pvalue": fit.pvalue}
    pi_lo, pi_hi = getattr(fit, "pi_lower", None), getattr(fit, "pi_upper", None)
    row["pi_lower"] = math.tanh(pi_lo) if pi_lo is not None else None
    row["pi_upper"] = math.tanh(pi_hi) if pi_hi is not None else None
    for key in ("q", "q_df", "q_pvalue", "i2", "tau2"):
        row[key] = getattr(fit, key, None)
    sigma2 = getattr(fit, "sigma2", None)
    if sigma2 is not None:
        row["sigma2_between"], row["sigma2_within"] = (float(s) for s in sigma2)
        row["tau2"] = float(sum(sigma2))
    return row


def tables(a: Analysis) -> list:
    """Every table of the report."""
    import math

    cluster = a.config["model"]["cluster"]
    out = []
    het = [("qdf", "Q (df)", "qdf"), ("q_pvalue", "p", "p"), ("i2", "I\u00b2", "pct")]

    rows = []
    if a.main.ok:
        rows.append(_fit_row("Symptom-type outcomes (main analysis)", a.main.result,
                             a.main.data, cluster))
    for step in a.separate:
        if step.ok:
            rows.append(_fit_row(f"{step.name.capitalize()} (analysed apart)", step.result,
                                 step.data, cluster))
        else:
            rows.append({"analysis": f"{step.name.capitalize()} (analysed apart)",
                         "k": len(step.data), "studies": int(step.data[cluster].nunique()),
                         "n": participants(step.data, cluster),
                         "note": f"not pooled: {step.note}"})
    out.append(Table("overall", "Table 1. Pooled alliance-outcome correlations "
                     "(three-level random-effects models, REML)",
                     [("analysis", "Outcomes", "text")] + APA_COLUMNS + het
                     + [("note", "", "text")], rows,
                     "k = findings; Studies = independent samples; N = patients (largest n per "
                     "sample); r back-transformed from Fisher's z; CI = confidence interval; PI = "
                     "prediction interval; I\u00b2 = share of the total variance due to "
                     "heterogeneity (both levels)."))

    rows = []
    for step in a.models:
        if not step.ok:
            rows.append({"analysis": step.name, "note": step.note})
            continue
        res = step.result
        if hasattr(res, "vcov_type"):  # cluster-robust inference on the three-level fit
            rows.append({"analysis": step.name, "k": res.k, "studies": res.n_clusters,
                         "r": math.tanh(res.estimate), "ci_lower": math.tanh(res.ci_lower),
                         "ci_upper": math.tanh(res.ci_upper), "z": res.estimate, "se": res.se,
                         "pvalue": res.pvalue, "df": res.df})
        else:
            row = _fit_row(step.name, res, step.data, cluster)
            if "composite" in step.name:
                row["studies"], row["n"] = res.k, participants(step.data, cluster)
            rows.append(row)
    out.append(Table("models", "Table 2. The main estimate under other models (sensitivity)",
                     [("analysis", "Model", "text"), ("k", "k", "int"),
                      ("studies", "Studies", "int"), ("r", "r", "r"), ("ci", "95% CI", "ci"),
                      ("pi", "95% PI", "pi"), ("pvalue", "p", "p"), ("note", "", "text")], rows,
                     "The main model is the three-level model (sampling errors of findings "
                     "from one sample taken as independent). CHE = correlated and hierarchical "
                     "effects working model (the same three levels, sampling errors within a "
                     "sample correlated \u03c1; Pustejovsky & Tipton, 2022). "
                     "CR2 = bias-reduced cluster-robust standard errors with Satterthwaite "
                     "degrees of freedom (clubSandwich); the composite model aggregates the "
                     "findings of each sample assuming a correlation \u03c1 between their "
                     "sampling errors."))

    rows = []
    for mod in a.moderators:
        q = mod.subgroups
        stat = (f"F({q.q_between_df}, {q.q_between_df2})" if q.q_between_df2 is not None
                else f"Q\u2098({q.q_between_df})")
        rows.append({"_group": True, "moderator": mod.field, "level": "",
                     "test": f"{stat} = {fmt_num(q.q_between)}",
                     "qm": q.q_between, "qm_df": q.q_between_df,
                     "qm_pvalue": q.q_between_pvalue, "test_p": q.q_between_pvalue,
                     "label": mod.field.replace("_", " ").capitalize()})
        for lv in mod.levels:
            rows.append({"moderator": mod.field, "label": f"\u2003{lv['level']}",
                         "level": lv["level"], "k": lv["k"], "studies": lv["studies"],
                         "n": lv["n"], "r": math.tanh(lv["estimate"]),
                         "ci_lower": math.tanh(lv["ci_lower"]),
                         "ci_upper": math.tanh(lv["ci_upper"]),
                         "pi_lower": math.tanh(lv["pi_lower"]),
                         "pi_upper": math.tanh(lv["pi_upper"]),
                         "z": lv["estimate"], "se": lv["se"], "qm": q.q_between,
                         "qm_df": q.q_between_df, "qm_pvalue": q.q_between_pvalue})
    out.append(Table("moderators", "Table 3. Moderator analyses (three-level models; levels "
                     "with enough findings)",
                     [("label", "Moderator / level", "text")] + APA_COLUMNS
                     + [("test", "Test of differences", "text"), ("test_p", "p", "p")],
                     rows,
                     "Each moderator enters a three-level model as a categorical predictor; "
                     "Q\u2098 is the omnibus Wald test that the levels differ. Levels with fewer "
                     f"than {a.config['moderators']['min_k']} findings or "
                     f"{a.config['moderators']['min_studies']} samples are left out.",
                     csv_columns=["moderator", "level", "k", "studies", "n", "r", "ci_lower",
                                  "ci_upper", "pi_lower", "pi_upper", "z", "se", "qm", "qm_df",
                                  "qm_pvalue"]))

    rows = []
    for step in a.regressions:
        if not step.ok:
            rows.append({"moderator": step.name.split(" on ")[-1], "note": step.note})
            continue
        c = step.result.coefficients[1]
        rows.append({"moderator": c.name, "k": step.result.k, "studies": step.result.n_clusters,
                     "b": c.estimate, "se": c.se, "ci_lower": c.ci_lower,
                     "ci_upper": c.ci_upper, "pvalue": c.pvalue, "note": ""})
    out.append(Table("meta_regression", "Table 4. Meta-regression (three-level, slope on "
                     "Fisher's z per unit)",
                     [("moderator", "Moderator", "text"), ("k", "k", "int"),
                      ("studies", "Studies", "int"), ("b", "b", "num3"), ("se", "SE", "num3"),
                      ("ci", "95% CI", "ci_z"), ("pvalue", "p", "p"), ("note", "", "text")],
                     rows, "b = change in Fisher's z per unit of the moderator (per year)."))

    out.append(_bias_table(a))
    if a.leave_one_out.ok:
        loo = a.leave_one_out.result
        rows = [{"label": f"Omitting {lab}", "r": math.tanh(e), "ci_lower": math.tanh(lo),
                 "ci_upper": math.tanh(hi), "z": e, "pvalue": p, "tau2": t, "i2": i2}
                for lab, e, lo, hi, p, t, i2 in zip(loo.labels, loo.estimate, loo.ci_lower,
                                                     loo.ci_upper, loo.pvalue, loo.tau2, loo.i2)]
        out.append(Table("leave_one_out", "Leave-one-out analysis (one composite per sample)",
                         [("label", "Analysis", "text"), ("r", "r", "r"), ("ci", "95% CI", "ci"),
                          ("tau2", "\u03c4\u00b2", "num3"), ("i2", "I\u00b2", "pct")], rows))
    if a.influence.ok:
        inf = a.influence.result
        rows = [{"label": lab, "rstudent": rs, "dffits": dff, "cook_d": cd, "cov_r": cr,
                 "tau2_del": t, "hat": h, "weight": w, "influential": bool(flag)}
                for lab, rs, dff, cd, cr, t, h, w, flag in zip(
                    inf.labels, inf.rstudent, inf.dffits, inf.cook_d, inf.cov_r, inf.tau2_del,
                    inf.hat, inf.weight, inf.inf)]
        out.append(Table("influence", "Influence diagnostics (metafor's influence())",
                         [("label", "Sample", "text"), ("rstudent", "rstudent", "num2"),
                          ("cook_d", "Cook's D", "num2"), ("hat", "hat", "num2"),
                          ("weight", "Weight", "pct"), ("influential", "Influential", "text")],
                         rows))
    if a.cumulative.ok:
        cum = a.cumulative.result
        rows = [{"label": lab, "year": int(a.years[i]), "k": int(kk), "r": math.tanh(e),
                 "ci_lower": math.tanh(lo), "ci_upper": math.tanh(hi), "z": e, "i2": i2}
                for lab, i, kk, e, lo, hi, i2 in zip(cum.labels, cum.index, cum.k, cum.estimate,
                                                     cum.ci_lower, cum.ci_upper, cum.i2)]
        out.append(Table("cumulative", "Cumulative meta-analysis by publication year",
                         [("label", "Sample added", "text"), ("year", "Year", "text"),
                          ("k", "k", "int"), ("r", "r", "r"), ("ci", "95% CI", "ci"),
                          ("i2", "I\u00b2", "pct")], rows))
    rows = []
    for c in a.comparison:
        rows.append(dict(c, synthesis=short_citation(c["authors"], c["year"])))
    out.append(Table("comparison", "Table 6. Published syntheses (reference points, never "
                     "pooled) beside the curated data",
                     [("synthesis", "Synthesis", "text"), ("population", "Population", "text"),
                      ("k_published", "k", "int"), ("r_published", "r", "r"),
                      ("ci_published", "95% CI", "ci_pub"), ("subset", "Our subset", "text"),
                      ("k", "Our k", "int"), ("r", "Our r", "r"), ("ci", "Our 95% CI", "ci"),
                      ("note", "", "text")], rows,
                     "Published values as reported by each synthesis (see "
                     "data/published_syntheses.csv); ours from the three-level model on the "
                     "matching subset of the curated findings."))
    from metaalliance.analyses import coverage
    out.append(Table("how_read", "Table 7. Findings by how they were read",
                     [("read", "Read in", "text"), ("conversion", "Conversion", "text"),
                      ("effect_type", "Effect", "text"), ("k", "k", "int"),
                      ("studies", "Studies", "int"), ("samples", "Samples", "int")],
                     coverage.how_read_rows(a.data_all, cluster),
                     "Read in: the study's own text (abstract, full text, table page) or a "
                     "published review's table (data/README.md). Conversion: exact, or with an "
                     "assumption (approximate). Effect: zero-order, partial or adjusted."))
    return out


def _bias_table(a: Analysis) -> Table:
    import math

    rows = []
    title = "Table 5. Small-study effects and publication bias (one composite per sample)"
    if not a.bias.ok:
        return Table("bias", title, [("test", "Analysis", "text"), ("result", "Result", "text")],
                     [{"test": "not run", "result": a.bias.note}])
    b = a.bias.result
    if b.egger is not None:
        e = b.egger
        stat = "z" if e.df is None else f"t({e.df})"
        rows.append({"test": "Egger's regression test", "statistic": e.stat,
                     "pvalue": e.pvalue, "estimate_r": math.tanh(e.limit_estimate),
                     "result": f"{stat} = {fmt_num(e.stat)}, {fmt_p(e.pvalue)}; limit estimate "
                               f"r = {fmt_r(math.tanh(e.limit_estimate))}"})
    if b.rank is not None:
        rows.append({"test": "Rank correlation test", "statistic": b.rank.tau,
                     "pvalue": b.rank.pvalue,
                     "result": f"Kendall's \u03c4 = {fmt_r(b.rank.tau)}, {fmt_p(b.rank.pvalue)}"})
    if b.trimfill is not None:
        t = b.trimfill
        f = t.fit
        rows.append({"test": f"Trim and fill ({t.estimator})", "statistic": t.k0,
                     "estimate_r": math.tanh(f.estimate),
                     "result": f"{t.k0} sample{'s' if t.k0 != 1 else ''} imputed on the "
                               f"{t.side}; adjusted r = "
                               f"{fmt_est_ci(math.tanh(f.estimate), math.tanh(f.ci_lower), math.tanh(f.ci_upper))}"})
    if b.pet_peese is not None:
        pp = b.pet_peese
        rows.append({"test": "PET-PEESE", "estimate_r": math.tanh(pp.estimate),
                     "pvalue": pp.pet_pvalue_one_sided,
                     "result": f"{pp.selected} selected; r = "
                               f"{fmt_est_ci(math.tanh(pp.estimate), math.tanh(pp.ci_lower), math.tanh(pp.ci_upper))}"})
    sel = getattr(a, "selection", None)
    if sel is not None and sel.ok:
        rows.append(_selection_row(sel.result))
    elif sel is not None and sel.note:
        rows.append({"test": "3PSM selection model", "result": f"not fitted: {sel.note}"})
    n = b.failsafe_n
    orwin = "\u221e" if n.orwin is None else fmt_int(n.orwin)
    rows.append({"test": "Fail-safe N", "statistic": n.rosenthal,
                 "result": f"Rosenthal {fmt_int(n.rosenthal)}; Orwin {orwin}; "
                           f"Rosenberg {fmt_int(n.rosenberg)}"})
    for note in b.notes:
        rows.append({"test": "Note", "result": note})
    return Table("bias", title, [("test", "Analysis", "text"), ("result", "Result", "text")],
                 rows, "Computed on one composite effect per sample, so that the tests see "
                 "independent effects.")


def _selection_row(s) -> dict:
    """The 3PSM row of the bias table (selection_model on the composites)."""
    import math

    ci = (fmt_est_ci(math.tanh(s.estimate), math.tanh(s.ci_lower), math.tanh(s.ci_upper))
          if s.ci_lower is not None else fmt_r(math.tanh(s.estimate)))
    return {"test": "3PSM selection model (step at p = .025)",
            "estimate_r": math.tanh(s.estimate), "statistic": s.lrt, "pvalue": s.lrt_p,
            "result": f"adjusted r = {ci}; \u03b4 = {fmt_num(s.delta[1])}; LRT \u03c7\u00b2(1) = "
                      f"{fmt_num(s.lrt)}, {fmt_p(s.lrt_p)}"}
