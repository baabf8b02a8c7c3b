"""APA-style numbers, tables and the analysis report (``metaalliance report``).

This is the one place where numbers are rounded: results keep full precision, and the
formatters below turn them into text for tables, figures and the HTML report.
"""

from __future__ import annotations

import math

from metaalliance.formatting import (MINUS, distinct_labels, fmt_ci, fmt_est_ci, fmt_int,  # noqa: F401
                                     fmt_num, fmt_p, fmt_pct, fmt_r, fmt_r_p)


# --- configuration ----------------------------------------------------------------------------

#: every option of analysis.toml with its default; unknown keys are refused
DEFAULT_CONFIG: dict = {
    "report": {
        "title": "Therapeutic alliance and outcome: meta-analysis of the curated findings",
        "formats": ["pdf", "png"],
        "dpi": 300,
        "width": "double",
        "sort": "estimate",
        "columns": ["instrument", "rater", "n", "weight", "ci"],
    },
    "data": {
        "findings": None,          # None: the shipped data/findings
        "bib": None,               # None: the shipped references.bib
        "where": {},               # field -> list of levels kept
        "published": "data/published_syntheses.csv",
    },
    "model": {
        "method": "REML",
        "test": "z",
        "level": 95.0,
        "cluster": "sample",
        "control": "metafor",      # options.CONTROLS: the univariate models' tau^2 iterations
    },
    "outcomes": {
        "separate": None,          # None: options.SEPARATE_DOMAINS
    },
    "moderators": {
        "fields": ["population", "diagnosis", "setting", "modality", "treatment", "design",
                   "instrument", "rater", "timing", "outcome_domain", "effect_type"],
        "exclude_levels": ["unspecified"],
        "min_k": 3,
        "min_studies": 2,
        "min_levels": 2,
        "regression": ["year"],
        "min_k_regression": 10,
    },
    "sensitivity": {
        "rho": 0.5,
        "cumulative_order": "year",
    },
    "bias": {
        "estimator": "L0",
        "alpha": 0.05,
    },
    "comparison": [],
}


def _merge(defaults: dict, given: dict, where: str) -> dict:
    from metaalliance.errors import OptionError

    out = {}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise OptionError(f"{where}: unknown option(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(defaults)}")
    for key, value in defaults.items():
        if key in given:
            if isinstance(value, dict) and key != "where":
                if not isinstance(given[key], dict):
                    raise OptionError(f"{where}: [{key}] must be a table")
                out[key] = _merge(value, given[key], f"{where} [{key}]")
            else:
                out[key] = given[key]
        else:
            out[key] = value
    return out


def load_config(path=None) -> dict:
    """analysis.toml merged over DEFAULT_CONFIG; every option is checked here."""
    import tomllib
    from pathlib import Path

    from metaalliance.errors import OptionError
    from metaalliance.options import CONTROLS, SEPARATE_DOMAINS, TESTS, TRIMFILL_ESTIMATORS, check_option

    given = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise OptionError(f"--config {path}: file not found")
        try:
            given = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise OptionError(f"{path}: not valid TOML: {exc}") from None
    name = str(path) if path is not None else "config"
    cfg = _merge(DEFAULT_CONFIG, given, name)
    m = cfg["model"]
    check_option("model.method", m["method"], ("REML", "ML"))
    check_option("model.test", m["test"], TESTS)
    check_option("model.control", m["control"], CONTROLS)
    if not 50 <= float(m["level"]) < 100:
        raise OptionError(f"{name}: model.level must lie in [50, 100), got {m['level']}")
    for fmt in cfg["report"]["formats"]:
        check_option("report.formats", fmt, ("pdf", "png", "svg", "eps", "tiff"))
    check_option("report.sort", cfg["report"]["sort"], ("estimate", "year", "label", "none"))
    check_option("bias.estimator", cfg["bias"]["estimator"], TRIMFILL_ESTIMATORS)
    if cfg["outcomes"]["separate"] is None:
        cfg["outcomes"]["separate"] = list(SEPARATE_DOMAINS)
    where = cfg["data"]["where"]
    if not isinstance(where, dict):
        raise OptionError(f"{name}: data.where must be a table of field = [levels]")
    cfg["data"]["where"] = {k: [str(x) for x in (v if isinstance(v, list) else [v])]
                            for k, v in where.items()}
    for i, comp in enumerate(cfg["comparison"]):
        if not isinstance(comp, dict) or "key" not in comp:
            raise OptionError(f"{name}: [[comparison]] entry {i + 1} needs a key")
        extra = sorted(set(comp) - {"key", "where", "label"})
        if extra:
            raise OptionError(f"{name}: [[comparison]] {comp['key']}: unknown option(s) "
                              f"{', '.join(extra)}; allowed: key, where, label")
    if path is not None:
        cfg["_path"] = str(path)
    return cfg


# --- the analysis (computation only: no files are read or written here) -----------------------

from dataclasses import dataclass, field  # noqa: E402


@dataclass
class Step:
    """One analysis of the report: its fitted result, or why it was not run."""

    name: str
    result: object = None
    data: object = None            # the findings rows it used (DataFrame)
    note: str = ""                 # why it was not run, or what to know about it
    warnings: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result is not None


@dataclass
class Moderator:
    field: str
    levels: list                   # dicts: level, k, studies, n, estimate, se, ci/pi (z), pvalue
    test: Step                     # three-level model with the moderator (QM)
    subgroups: object = None       # SubgroupResult-shaped record for the forest plot
    overall: object = None         # three-level fit of the rows analysed
    data: object = None
    dropped: list = field(default_factory=list)   # levels left out (too few findings)
    note: str = ""


@dataclass
class Analysis:
    config: dict
    data_all: object               # every finding loaded (after data.where)
    data_main: object              # the findings of the main analysis
    main: Step
    separate: list                 # Steps, one per outcome domain analysed apart
    models: list                   # Steps: the main estimate under other models
    moderators: list               # Moderator per field analysed
    skipped: list                  # (field, reason) not analysed
    regressions: list              # Steps: three-level meta-regressions
    aggregated: Step               # random-effects model of one composite per sample
    leave_one_out: Step
    influence: Step
    cumulative: Step
    bias: Step
    comparison: list               # dicts, one per published synthesis
    years: object = None           # per aggregated sample: year (cumulative order)


def participants(df, cluster: str) -> int:
    """Patients: the largest n of each independent sample, summed."""
    if len(df) == 0:
        return 0
    return int(df.groupby(cluster)["n"].max().sum())


def finding_labels(df) -> list:
    """'Author et al. (Year)', with the finding id added where a study has several findings."""
    counts = df.groupby("citekey")["citekey"].transform("size")
    return [f"{lab} {fid}" if c > 1 else str(lab)
            for lab, fid, c in zip(df["label"], df["finding_id"], counts)]


def _captured(step: Step, fn):
    """Run ``fn``; engine warnings go into the step, a MetaAllianceError into its note."""
    import warnings

    from metaalliance.errors import MetaAllianceError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            step.result = fn()
        except MetaAllianceError as exc:
            step.result = None
            step.note = str(exc).splitlines()[0]
    seen = []
    for w in caught:
        text = str(w.message)
        if text not in seen:
            seen.append(text)
    step.warnings += seen
    return step


def _three_level(df, cfg, X=None, names=None):
    from metaalliance.engine import models

    m = cfg["model"]
    if len(df) < 2:
        from metaalliance.errors import ModelError

        raise ModelError(f"k = {len(df)}: at least 2 findings are needed")
    return models.three_level(df["yi"].to_numpy(float), df["vi"].to_numpy(float),
                              df[m["cluster"]].astype(str).to_numpy(), method=m["method"],
                              test="t" if m["test"] == "knha" else "z", level=m["level"],
                              labels=finding_labels(df), X=X, coef_names=names, measure="ZCOR")


def _moderator(df, fld: str, cfg) -> tuple:
    """A three-level subgroup analysis of ``fld``: QM test of the differences (model with
    intercept) and one estimate per level (the same model without intercept, sharing the
    variance components). Returns (Moderator, None) or (None, reason)."""
    import numpy as np
    from metaalliance.engine import distributions as stats

    from metaalliance.engine.results import SubgroupEstimate, SubgroupResult

    mc, m = cfg["moderators"], cfg["model"]
    cluster = m["cluster"]
    if fld not in df.columns:
        return None, f"no column {fld!r} in the data"
    sub = df[df[fld].notna()]
    sub = sub[~sub[fld].astype(str).isin([str(x) for x in mc["exclude_levels"]])]
    counts = sub.groupby(sub[fld].astype(str)).agg(k=("yi", "size"), studies=(cluster, "nunique"))
    good = counts[(counts["k"] >= mc["min_k"]) & (counts["studies"] >= mc["min_studies"])]
    levels = sorted(good.index)
    dropped = [f"{lv} (k = {int(counts.at[lv, 'k'])}, {int(counts.at[lv, 'studies'])} "
               f"{'study' if counts.at[lv, 'studies'] == 1 else 'studies'})"
               for lv in sorted(counts.index) if lv not in levels]
    if len(levels) < mc["min_levels"]:
        have = ", ".join(f"{lv} {int(r.k)}/{int(r.studies)}" for lv, r in counts.iterrows())
        return None, (f"fewer than {mc['min_levels']} levels with at least {mc['min_k']} findings "
                      f"from {mc['min_studies']} studies (findings/studies: {have or 'none'})")
    sub = sub[sub[fld].astype(str).isin(levels)].reset_index(drop=True)
    g = sub[fld].astype(str).to_numpy()
    D = np.column_stack([(g == lv).astype(float) for lv in levels])
    test = Step(f"moderator {fld}", data=sub)
    X = np.column_stack([np.ones(len(sub)), D[:, 1:]])
    names = ["intrcpt"] + [f"{fld}{lv}" for lv in levels[1:]]
    _captured(test, lambda: _three_level(sub, cfg, X, names))
    if not test.ok:
        return None, f"the model with {fld} could not be fitted: {test.note}"
    cells = Step(f"levels of {fld}")
    _captured(cells, lambda: _three_level(sub, cfg, D, list(levels)))
    overall = Step(f"overall of {fld}")
    _captured(overall, lambda: _three_level(sub, cfg))
    if not cells.ok or not overall.ok:
        return None, f"the model with {fld} could not be fitted: {cells.note or overall.note}"
    fit = cells.result
    s2 = float(sum(fit.sigma2))
    crit = float(stats.norm.isf((100 - float(m["level"])) / 200))
    rows, estimates = [], []
    for lv, coef in zip(levels, fit.coefficients):
        part = sub[g == lv]
        half = crit * np.sqrt(coef.se ** 2 + s2)  # metafor predict(): PI with both components
        row = {"level": lv, "k": int(len(part)), "studies": int(part[cluster].nunique()),
               "n": participants(part, cluster), "estimate": coef.estimate, "se": coef.se,
               "ci_lower": coef.ci_lower, "ci_upper": coef.ci_upper,
               "pi_lower": coef.estimate - half, "pi_upper": coef.estimate + half,
               "pvalue": coef.pvalue}
        rows.append(row)
        estimates.append(SubgroupEstimate(lv, row["k"], coef.estimate, coef.se, coef.stat,
                                          coef.pvalue, coef.ci_lower, coef.ci_upper,
                                          row["pi_lower"], row["pi_upper"], s2))
    q = test.result
    df1 = int(q.qm_df[0])
    df2 = int(q.qm_df[1]) if len(q.qm_df) > 1 and q.qm_df[1] is not None else None
    record = SubgroupResult(by=fld, tau2_model="pooled", method=q.method, test=q.test,
                            level=q.level, measure="ZCOR", subgroups=tuple(estimates),
                            q_between=float(q.qm), q_between_df=df1, q_between_df2=df2,
                            q_between_pvalue=float(q.qm_pvalue), k=len(sub), models={},
                            provenance=q.provenance)
    mod = Moderator(fld, rows, test, record, overall.result, sub, dropped)
    mod.test.warnings += cells.warnings + overall.warnings
    return mod, None


def _regression(df, fld: str, cfg) -> Step:
    import numpy as np

    step = Step(f"meta-regression on {fld}")
    if fld not in df.columns:
        step.note = f"no column {fld!r} in the data"
        return step
    sub = df[df[fld].notna()].reset_index(drop=True)
    x = sub[fld].to_numpy(dtype=float)
    step.data = sub
    if len(sub) < cfg["moderators"]["min_k_regression"] or len(np.unique(x)) < 3:
        step.note = (f"k = {len(sub)} findings with {len(np.unique(x))} distinct values of {fld}: "
                     f"needs at least {cfg['moderators']['min_k_regression']} findings and 3 "
                     "distinct values")
        return step
    X = np.column_stack([np.ones(len(sub)), x])
    return _captured(step, lambda: _three_level(sub, cfg, X, ["intrcpt", fld]))


def _aggregate(df, cfg):
    """One composite effect per sample (metafor's aggregate(), rho from the config)."""
    import numpy as np

    from metaalliance.engine import models
    from metaalliance.engine import multilevel

    cluster = cfg["model"]["cluster"]
    agg = multilevel.aggregate(df["yi"].to_numpy(float), df["vi"].to_numpy(float),
                               df[cluster].astype(str).to_numpy(), rho=cfg["sensitivity"]["rho"])
    first = df.groupby(df[cluster].astype(str), sort=False).agg(
        label=("label", "first"), year=("year", "min"))
    keys = [str(c) for c in agg.cluster]
    labels = distinct_labels([str(first.at[c, "label"]) for c in keys], keys)
    years = np.array([float(first.at[c, "year"]) for c in keys])
    m = cfg["model"]
    fit = models.random_effects(agg.yi, agg.vi, method=m["method"], test=m["test"],
                                level=m["level"], labels=labels, measure="ZCOR",
                                control=m["control"])
    return agg, fit, years


def analyse(df_all, cfg, published=None, progress=None) -> Analysis:
    """Every analysis of the report on the findings DataFrame ``df_all``.

    ``published`` is the table of published syntheses (reference points, never pooled);
    ``progress(label)`` is called before each step. No I/O happens here.
    """
    import numpy as np

    from metaalliance.analyses import bias
    from metaalliance.engine import models
    from metaalliance.engine import multilevel
    from metaalliance.analyses import sensitivity
    from metaalliance.dataset.selection import apply_where

    tick = progress or (lambda label: None)
    m = cfg["model"]
    cluster = m["cluster"]
    where = list(cfg["data"]["where"].items())
    df_all = apply_where(df_all, where, "the curated dataset").reset_index(drop=True)
    separate = cfg["outcomes"]["separate"]
    df_main = df_all[~df_all["outcome_domain"].isin(separate)].reset_index(drop=True)

    tick("main model")
    main = _captured(Step("main", data=df_main), lambda: _three_level(df_main, cfg))

    seps = []
    for domain in separate:
        part = df_all[df_all["outcome_domain"] == domain].reset_index(drop=True)
        if len(part) == 0:
            continue
        tick(f"{domain} findings")
        seps.append(_captured(Step(domain, data=part), lambda p=part: _three_level(p, cfg)))

    tick("model comparison")
    comparisons = []
    if main.ok:
        comparisons.append(Step("three-level (primary)", main.result, df_main))
        comparisons.append(_captured(Step("three-level, cluster-robust CI (CR2)", data=df_main),
                                     lambda: multilevel.robust(main.result)))
        comparisons.append(_captured(Step("random effects, findings as independent",
                                          data=df_main),
                                     lambda: models.random_effects(
                                         df_main["yi"], df_main["vi"], method=m["method"],
                                         test=m["test"], level=m["level"],
                                         control=m["control"],
                                         labels=finding_labels(df_main))))
    agg = _captured(Step("aggregated", data=df_main), lambda: _aggregate(df_main, cfg))
    agg_fit, years = None, None
    if agg.ok:
        _, agg_fit, years = agg.result
        comparisons.append(Step(f"random effects, one composite per sample "
                                f"(\u03c1 = {fmt_r(cfg['sensitivity']['rho'])})", agg_fit,
                                df_main))

    mods, skipped = [], []
    for fld in cfg["moderators"]["fields"]:
        tick(f"moderator {fld}")
        mod, why = _moderator(df_main, fld, cfg)
        if mod is None:
            skipped.append((fld, why))
        else:
            mods.append(mod)
    regs = []
    for fld in cfg["moderators"]["regression"]:
        tick(f"meta-regression {fld}")
        regs.append(_regression(df_main, fld, cfg))

    loo, infl, cum, bias_step = (Step("leave-one-out"), Step("influence"), Step("cumulative"),
                                 Step("bias"))
    if agg_fit is not None and agg_fit.k >= 3:
        tick("leave-one-out and influence")
        _captured(loo, lambda: sensitivity.leave_one_out(agg_fit))
        _captured(infl, lambda: sensitivity.influence(agg_fit))
        tick("cumulative")
        _captured(cum, lambda: sensitivity.cumulative(agg_fit, order=years, order_by="year"))
        tick("publication bias")
        _captured(bias_step, lambda: bias.run_all(agg_fit, estimator=cfg["bias"]["estimator"],
                                                  alpha=cfg["bias"]["alpha"]))
    else:
        why = (f"k = {agg_fit.k} samples: at least 3 are needed" if agg_fit is not None
               else f"no composite per sample: {agg.note}")
        for step in (loo, infl, cum, bias_step):
            step.note = why

    tick("published syntheses")
    comparison = _compare(df_main, main, published, cfg)
    return Analysis(cfg, df_all, df_main, main, seps, comparisons, mods, skipped, regs, agg,
                    loo, infl, cum, bias_step, comparison, years)


def _compare(df_main, main: Step, published, cfg) -> list:
    """Published syntheses beside our estimate for the matching subset (reference points)."""
    import math

    from metaalliance.dataset.selection import apply_where

    if published is None:
        return []
    wanted = {c["key"]: c for c in cfg["comparison"]}
    rows = []
    for _, pub in published.iterrows():
        key = str(pub["key"])
        row = {"key": key, "citation": str(pub.get("citation", "")),
               "authors": str(pub["authors"]), "year": int(pub["year"]),
               "population": str(pub["population"]),
               "k_published": _num(pub.get("k")), "r_published": _num(pub.get("pooled_r")),
               "ci_lower_published": _num(pub.get("ci_lower")),
               "ci_upper_published": _num(pub.get("ci_upper")),
               "subset": "", "k": None, "studies": None, "r": None, "ci_lower": None,
               "ci_upper": None, "note": ""}
        comp = wanted.get(key)
        if comp is not None:
            where = comp.get("where", {})
            row["subset"] = comp.get("label") or (
                "; ".join(f"{f} = {', '.join(map(str, v if isinstance(v, list) else [v]))}"
                          for f, v in where.items()) or "all main findings")
            part = apply_where(df_main, [(f, [str(x) for x in (v if isinstance(v, list) else [v])])
                                         for f, v in where.items()], "the curated dataset")
            step = _captured(Step(key, data=part), lambda p=part: _three_level(p, cfg))
            if step.ok:
                fit = step.result
                row.update(k=fit.k, studies=fit.n_clusters, r=math.tanh(fit.estimate),
                           ci_lower=math.tanh(fit.ci_lower), ci_upper=math.tanh(fit.ci_upper))
            else:
                row["note"] = (f"too few of our findings (k = {len(part)})" if len(part) < 2
                               else f"not pooled: {step.note}")
        rows.append(row)
    return rows


def _num(x):
    import math

    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


# --- tables: raw values for CSV, APA text for Markdown and HTML --------------------------------

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
        t = self.shown()
        head = [h for _, h, _ in t.columns]
        align = ["---" if kind == "text" else "---:" for _, _, kind in t.columns]
        lines = [f"**{self.title}**", "", "| " + " | ".join(head) + " |",
                 "| " + " | ".join(align) + " |"]
        for cells in t.text_rows():
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        if self.note:
            lines += ["", f"*Note.* {self.note}"]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        from html import escape

        t = self.shown()
        head = "".join(f"<th class='{'t' if kind == 'text' else 'n'}'>{escape(h)}</th>"
                       for _, h, kind in t.columns)
        body = []
        for r, cells in zip(t.rows, t.text_rows()):
            cls = " class='group'" if r.get("_group") else ""
            body.append(f"<tr{cls}>" + "".join(
                f"<td class='{'t' if kind == 'text' else 'n'}'>{escape(c)}</td>"
                for c, (_, _, kind) in zip(cells, t.columns)) + "</tr>")
        note = f"<p class='note'><em>Note.</em> {escape(self.note)}</p>" if self.note else ""
        return (f"<table id='table-{self.name}'><caption>{escape(self.title)}</caption>"
                f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}")

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


# --- the APA results paragraph ------------------------------------------------------------------

def _r_ci(fit) -> str:
    import math

    return (f"r = {fmt_r(math.tanh(fit.estimate))}, {fit.level:g}% CI "
            f"{fmt_ci(math.tanh(fit.ci_lower), math.tanh(fit.ci_upper))}")


def _count_word(n: int) -> str:
    """APA: numbers below 10 in words."""
    words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    return words[n] if 0 <= n < 10 else fmt_int(n)


def summary_paragraph(a: Analysis) -> str:
    """One APA-style paragraph of results (every number rounded here, from the fits)."""
    import math

    cluster = a.config["model"]["cluster"]
    d = a.data_all
    parts = [f"The curated dataset used here holds {len(d)} findings from "
             f"{d['citekey'].nunique()} studies ({d[cluster].nunique()} independent samples, "
             f"N = {fmt_int(participants(d, cluster))} patients)."]
    if not a.main.ok:
        parts.append(f"The main model could not be fitted: {a.main.note}.")
        return " ".join(parts)
    f = a.main.result
    stat = "z" if f.test == "z" else f"t({fmt_int(f.df)})"
    parts.append(
        f"For symptom-type outcomes (k = {f.k} findings from {f.n_clusters} samples, N = "
        f"{fmt_int(participants(a.data_main, cluster))}), a three-level random-effects model "
        f"(REML; findings nested in samples) estimated the alliance-outcome correlation at "
        f"{_r_ci(f)}, {stat} = {fmt_num(f.stat)}, {fmt_p(f.pvalue)}; the {f.level:g}% prediction "
        f"interval ran from {fmt_r(math.tanh(f.pi_lower))} to {fmt_r(math.tanh(f.pi_upper))}.")
    het = "significant" if f.q_pvalue < 0.05 else "not significant"
    parts.append(f"Heterogeneity was {het}, Q({f.q_df}) = {fmt_num(f.q)}, {fmt_p(f.q_pvalue)}, "
                 f"I\u00b2 = {fmt_pct(f.i2, 0)} (\u03c3\u00b2 between samples = "
                 f"{fmt_num(f.sigma2[0], 3)}, within = {fmt_num(f.sigma2[1], 3)}).")
    apart = [s for s in a.separate if s.ok]
    if apart:
        parts.append("Analysed apart, " + "; ".join(
            f"{s.name} findings gave {_r_ci(s.result)} (k = {s.result.k})" for s in apart) + ".")
    if a.moderators:
        def test(m):
            q = m.subgroups
            stat = (f"F({q.q_between_df}, {q.q_between_df2})" if q.q_between_df2 is not None
                    else f"Q\u2098({q.q_between_df})")
            return (f"{m.field.replace('_', ' ')}, {stat} = {fmt_num(q.q_between)}, "
                    f"{fmt_p(q.q_between_pvalue)}")

        sig = [m for m in a.moderators if m.subgroups.q_between_pvalue < 0.05]
        rest = [m for m in a.moderators if m not in sig]
        if sig:
            text = (f"Of the {_count_word(len(a.moderators))} moderators tested, the estimates "
                    f"differed between "
                    f"levels of {'; '.join(test(m) for m in sig)}")
            if rest:
                text += f", but not of {'; '.join(test(m) for m in rest)}"
        else:
            text = (f"None of the {_count_word(len(a.moderators))} moderators tested showed "
                    "differences "
                    f"between its levels ({'; '.join(test(m) for m in rest)})")
        parts.append(text + ".")
    if a.skipped:
        n = len(a.skipped)
        parts.append(f"{_count_word(n).capitalize()} tagged moderator{'s' if n != 1 else ''} "
                     f"had too few findings per level to be tested "
                     f"({', '.join(fld.replace('_', ' ') for fld, _ in a.skipped)}).")
    for step in a.regressions:
        if step.ok:
            c = step.result.coefficients[1]
            parts.append(f"In a three-level meta-regression on {c.name}, the slope was b = "
                         f"{fmt_num(c.estimate, 4)} per unit on the z scale, {step.result.level:g}% CI "
                         f"{fmt_ci(c.ci_lower, c.ci_upper, 4, r=False)}, {fmt_p(c.pvalue)}.")
    if a.bias.ok:
        b = a.bias.result
        bits = []
        if b.egger is not None:
            e = b.egger
            stat = "z" if e.df is None else f"t({e.df})"
            verdict = "indicated" if e.pvalue < 0.10 else "did not indicate"
            bits.append(f"Egger's test {verdict} funnel asymmetry, {stat} = {fmt_num(e.stat)}, "
                        f"{fmt_p(e.pvalue)}")
        if b.trimfill is not None:
            t = b.trimfill
            if t.k0 > 0:
                bits.append(f"trim and fill imputed {_count_word(t.k0)} "
                            f"sample{'s' if t.k0 != 1 else ''} on the {t.side}, giving an "
                            f"adjusted {_r_ci(t.fit)}")
            else:
                bits.append("trim and fill imputed no samples")
        if bits:
            parts.append(f"With one composite effect per sample (k = {b.k}), "
                         + "; ".join(bits) + ".")
    pubs = [c for c in a.comparison if c["r_published"] is not None]
    if pubs:
        lo = min(c["r_published"] for c in pubs)
        hi = max(c["r_published"] for c in pubs)
        r = math.tanh(f.estimate)
        where = ("within" if lo <= r <= hi else "below" if r < lo else "above")
        parts.append(f"The pooled estimate lies {where} the range of the published syntheses "
                     f"used as reference points (r = {fmt_r(lo)} to {fmt_r(hi)}; they are not "
                     "pooled with these findings).")
    return " ".join(parts)


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


def short_citation(authors: str, year) -> str:
    """APA in-text citation from 'Surname, Surname, ...': 'A (2018)', 'A & B (2018)',
    'A et al. (2018)'."""
    names = [a.strip() for a in str(authors).split(",") if a.strip()]
    if not names:
        return f"({year})"
    if "et al" in names[0]:
        return f"{names[0].split(' et al')[0]} et al. ({year})"
    if len(names) == 1:
        return f"{names[0]} ({year})"
    if len(names) == 2:
        return f"{names[0]} & {names[1]} ({year})"
    return f"{names[0]} et al. ({year})"


# --- HTML ------------------------------------------------------------------------------------------

CSS = """
body{font-family:"Liberation Sans",Arial,Helvetica,sans-serif;max-width:1040px;margin:0 auto;
padding:0 24px 60px;color:#111;line-height:1.45}
h1{font-size:1.6em;margin:1.2em 0 .2em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid
#999;padding-bottom:.2em}h3{font-size:1.05em;margin-top:1.5em}
nav ol{columns:2;font-size:.95em}p.meta{color:#555;font-size:.9em;margin-top:0}
table{border-collapse:collapse;margin:1em 0 .3em;font-size:.9em;width:auto;max-width:100%}
caption{text-align:left;font-style:italic;padding-bottom:.4em}
thead tr{border-top:2px solid #000;border-bottom:1px solid #000}
tbody tr:last-child{border-bottom:2px solid #000}
th,td{padding:.25em .7em;vertical-align:top}td.n,th.n{text-align:right;white-space:nowrap}
td.t,th.t{text-align:left}tr.group td{font-weight:bold;padding-top:.6em}
p.note{font-size:.85em;color:#333;margin-top:.2em;max-width:60em}
figure{margin:1.5em 0}figure img{display:block;max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:.9em;margin-top:.4em;max-width:60em}
.summary{background:#f6f6f6;border-left:4px solid #555;padding:.8em 1.2em}
.warn{color:#8a4b00}.files a{margin-right:.6em}details{margin:.6em 0}
summary{cursor:pointer;color:#024}code{font-size:.95em}
a{color:#0645ad}
"""


def _figure_html(fig: Figure, number: int, out_dir, show: bool = True) -> str:
    from html import escape

    links = " ".join(f"<a href='{escape(f)}'>{escape(f.rsplit('.', 1)[-1].upper())}</a>"
                     for f in fig.files)
    png = next((f for f in fig.files if f.endswith(".png")), None)
    caption = (f"<figcaption><b>Figure {number}.</b> {escape(fig.title)}. {escape(fig.caption)} "
               f"<span class='files'>{links}</span></figcaption>")
    if not show or png is None:
        return f"<figure id='fig-{fig.name}'>{caption}</figure>"
    width = _display_width(out_dir / png)
    pdf = next((f for f in fig.files if f.endswith(".pdf")), png)
    return (f"<figure id='fig-{fig.name}'><a href='{escape(pdf)}'><img src='{escape(png)}' "
            f"alt='{escape(fig.title)}' style='width:{width}px'></a>{caption}</figure>")


#: screen pixels per mm of figure width: 7-pt text reads at about 13 px
PX_PER_MM = 5.5


def _display_width(png_path) -> int:
    from PIL import Image

    with Image.open(png_path) as im:
        dpi = im.info.get("dpi", (300, 300))[0] or 300
        return int(round(im.size[0] / float(dpi) * 25.4 * PX_PER_MM))


def html_report(a: Analysis, tabs: list, figs: list, out_dir, manifest: dict) -> str:
    from html import escape

    cfg = a.config
    t = {tab.name: tab for tab in tabs}
    numbers = {f.name: i + 1 for i, f in enumerate(figs)}
    by_section = {}
    for f in figs:
        by_section.setdefault(f.section, []).append(f)

    def fig(name, show=True):
        f = next((x for x in figs if x.name == name), None)
        return _figure_html(f, numbers[name], out_dir, show) if f else ""

    def table(name):
        tab = t.get(name)
        if tab is None:
            return ""
        return tab.html() + (f"<p class='files'>Table as <a href='tables/{name}.csv'>CSV</a> "
                             f"<a href='tables/{name}.md'>Markdown</a></p>")

    cluster = cfg["model"]["cluster"]
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>{escape(cfg['report']['title'])}</title><style>{CSS}</style></head><body>",
             f"<h1>{escape(cfg['report']['title'])}</h1>",
             f"<p class='meta'>metaalliance {escape(manifest['versions']['metaalliance'])} · data "
             f"hash <code>{escape(manifest['data']['hash'][:12])}</code> · commit "
             f"<code>{escape((manifest.get('git') or {}).get('commit', 'n/a')[:12])}</code> · "
             f"<a href='manifest.json'>manifest.json</a> · <a href='report.md'>report.md</a></p>",
             "<nav><ol><li><a href='#summary'>Results summary</a></li>"
             "<li><a href='#overall'>Pooled estimates</a></li>"
             "<li><a href='#moderators'>Moderators</a></li>"
             "<li><a href='#sensitivity'>Sensitivity analyses</a></li>"
             "<li><a href='#bias'>Publication bias</a></li>"
             "<li><a href='#comparison'>Published syntheses</a></li>"
             "<li><a href='#data'>Data analysed</a></li>"
             "<li><a href='#reproduce'>Reproducibility and files</a></li></ol></nav>",
             "<h2 id='summary'>Results summary</h2>",
             f"<p class='summary'>{escape(summary_paragraph(a))}</p>",
             "<h2 id='overall'>Pooled estimates</h2>",
             f"<p>Main analysis: findings with outcome domains other than "
             f"{escape(', '.join(cfg['outcomes']['separate']))}, which are pooled apart. Model: "
             f"three-level random effects ({escape(cfg['model']['method'])}), findings nested in "
             f"<code>{escape(cluster)}</code>; {escape(cfg['model']['test'])} test; correlations "
             "pooled on Fisher's z and back-transformed.</p>",
             table("overall"), fig("forest_main")]
    for f in by_section.get("overall", []):
        if f.name != "forest_main":
            parts.append(fig(f.name))
    parts.append("<h2 id='moderators'>Moderators</h2>")
    parts.append(table("moderators"))
    for mod in a.moderators:
        parts.append(fig(f"moderator_{mod.field}"))
        parts.append(fig(f"forest_by_{mod.field}", show=False))
        if mod.dropped:
            parts.append(f"<p class='note'>Left out of the {escape(mod.field)} analysis (too few "
                         f"findings): {escape('; '.join(mod.dropped))}.</p>")
    if a.skipped:
        items = "".join(f"<li><b>{escape(fld)}</b>: {escape(why)}</li>" for fld, why in a.skipped)
        parts.append(f"<h3>Moderators not tested</h3><ul>{items}</ul>")
    parts.append(table("meta_regression"))
    for f in by_section.get("moderators", []):
        if f.name.startswith("bubble_"):
            parts.append(fig(f.name))
    parts += ["<h2 id='sensitivity'>Sensitivity analyses</h2>", table("models"),
              fig("leave_one_out"), fig("cumulative")]
    for name in ("leave_one_out", "influence", "cumulative"):
        if name in t:
            parts.append(f"<details><summary>{escape(t[name].title)}</summary>{table(name)}"
                         "</details>")
    for step in (a.leave_one_out, a.cumulative):
        if not step.ok:
            parts.append(f"<p class='note'>{escape(step.name)}: not run ({escape(step.note)}).</p>")
    parts += ["<h2 id='bias'>Publication bias and small-study effects</h2>", table("bias"),
              fig("funnel"),
              "<h2 id='comparison'>Published syntheses</h2>",
              "<p>Pooled estimates of published meta-analyses, carried as reference points (never "
              "pooled with the curated findings), beside the estimate of this dataset for the "
              "matching subset set in <code>analysis.toml</code>.</p>",
              table("comparison"), fig("comparison")]
    refs = "".join(f"<li>{escape(c['citation'])}</li>" for c in a.comparison if c["citation"])
    if refs:
        parts.append(f"<h3>References of the published syntheses</h3><ol>{refs}</ol>")
    d = a.data_all
    parts.append("<h2 id='data'>Data analysed</h2>")
    parts.append(f"<p>{len(d)} findings from {d['citekey'].nunique()} studies "
                 f"({d[cluster].nunique()} samples); {len(a.data_main)} in the main analysis. "
                 "Every finding's numbers were read in the source it cites (DOI or URL) at the "
                 "locator given. <a href='tables/findings.csv'>All findings as CSV</a>.</p>")
    rows = "".join(
        f"<tr><td class='t'>{escape(str(r.label))}</td><td class='t'>{escape(str(r.finding_id))}"
        f"</td><td class='n'>{fmt_int(r.n)}</td><td class='n'>{fmt_r(r.r)}</td>"
        f"<td class='t'>{escape(str(r.outcome_domain))}</td><td class='t'>"
        f"{escape(str(r.instrument))}, {escape(str(r.rater))}</td><td class='t'>"
        f"{_source_link(r.source)} ({escape(str(r.locator))})</td></tr>"
        for r in d.sort_values(["label", "finding_id"]).itertuples())
    parts.append("<details><summary>Every finding</summary><table><thead><tr><th class='t'>"
                 "Study</th><th class='t'>Finding</th><th class='n'>N</th><th class='n'>r</th>"
                 "<th class='t'>Domain</th><th class='t'>Alliance measure</th><th class='t'>"
                 f"Source</th></tr></thead><tbody>{rows}</tbody></table></details>")
    parts.append("<h2 id='reproduce'>Reproducibility and files</h2>")
    v = manifest["versions"]
    parts.append(f"<p>Produced by <code>metaalliance report --config "
                 f"{escape(manifest['config_file'] or '(defaults)')}</code>. Data hash (findings "
                 f"and bib) <code>{escape(manifest['data']['hash'])}</code>; "
                 f"{escape(', '.join(f'{k} {val}' for k, val in v.items()))}. "
                 "Every option is in <a href='manifest.json'>manifest.json</a>.</p>")
    notes = [(s.name, w) for s in _all_steps(a) for w in s.warnings]
    if notes:
        items = "".join(f"<li>{escape(n)}: {escape(w)}</li>" for n, w in notes)
        parts.append(f"<details><summary>Notes from the models ({len(notes)})</summary>"
                     f"<ul class='warn'>{items}</ul></details>")
    listing = "".join(f"<li><a href='{escape(f)}'>{escape(f)}</a></li>"
                      for f in sorted(manifest["files"]))
    parts.append(f"<details><summary>All files ({len(manifest['files'])})</summary>"
                 f"<ul>{listing}</ul></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _source_link(source: str) -> str:
    from html import escape

    source = str(source)
    if source.startswith("doi:"):
        return f"<a href='https://doi.org/{escape(source[4:])}'>{escape(source)}</a>"
    if source.startswith("url:"):
        return f"<a href='{escape(source[4:])}'>{escape(source[4:])}</a>"
    return escape(source)


def _all_steps(a: Analysis) -> list:
    steps = [a.main, *a.separate, *a.models, a.aggregated, *a.regressions, a.leave_one_out,
             a.influence, a.cumulative, a.bias]
    steps += [m.test for m in a.moderators]
    return steps


def markdown_report(a: Analysis, tabs: list, figs: list) -> str:
    lines = [f"# {a.config['report']['title']}", "", "## Results summary", "",
             summary_paragraph(a), ""]
    for tab in tabs:
        if tab.name in ("leave_one_out", "influence", "cumulative"):
            continue
        lines += [tab.markdown(), ""]
    lines += ["## Figures", ""]
    for i, f in enumerate(figs, start=1):
        files = ", ".join(f"[{p.rsplit('.', 1)[-1].upper()}]({p})" for p in f.files)
        lines.append(f"- Figure {i}. {f.title}: {files}")
    return "\n".join(lines) + "\n"


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
