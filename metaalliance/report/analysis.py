"""The report's analyses (computation only: no files are read or written here).

``analyse`` fits the main three-level model, the outcomes analysed apart, the other models,
moderators, meta-regressions, sensitivity and bias analyses and the comparison with published
syntheses; every step is a ``Step`` holding its result or why it was not run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from metaalliance.formatting import distinct_labels, fmt_r


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
    coverage: object = None        # dataset.flow.Flow: PRISMA counts of the dataset's files
    selection: object = None       # Step: 3PSM selection model on the composites (issue 13)


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

    from metaalliance.engine import aggregation
    from metaalliance.engine import models

    cluster = cfg["model"]["cluster"]
    agg = aggregation.aggregate(df["yi"].to_numpy(float), df["vi"].to_numpy(float),
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


def _strict(step: Step, df_main, cfg):
    """The main model on the zero-order exact findings read in the studies' own texts."""
    from metaalliance.analyses import coverage
    step.data, result, step.note = coverage.strict_fit(df_main, lambda d: _three_level(d, cfg))
    return result


def analyse(df_all, cfg, published=None, progress=None) -> Analysis:
    """Every analysis of the report on the findings DataFrame ``df_all``.

    ``published`` is the table of published syntheses (reference points, never pooled);
    ``progress(label)`` is called before each step. No I/O happens here.
    """
    import numpy as np

    from metaalliance.analyses import bias
    from metaalliance.engine import cluster_robust
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
                                     lambda: cluster_robust.robust(main.result)))
        comparisons.append(_captured(Step("random effects, findings as independent",
                                          data=df_main),
                                     lambda: models.random_effects(
                                         df_main["yi"], df_main["vi"], method=m["method"],
                                         test=m["test"], level=m["level"],
                                         control=m["control"],
                                         labels=finding_labels(df_main))))
        from metaalliance.engine.che import DEFAULT_CHE_RHO, che
        comparisons.append(_captured(
            Step(f"CHE working model (\u03c1 = {fmt_r(DEFAULT_CHE_RHO)}), CR2", data=df_main),
            lambda: che(df_main["yi"].to_numpy(float), df_main["vi"].to_numpy(float),
                        df_main[cluster].astype(str).to_numpy(), rho=DEFAULT_CHE_RHO,
                        level=m["level"], measure="ZCOR")))
        from metaalliance.analyses import coverage
        strict = Step(coverage.STRICT_NAME)
        _captured(strict, lambda: _strict(strict, df_main, cfg))
        comparisons.append(strict)
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
        from metaalliance.analyses.selection import selection_model
        sel_step = _captured(Step("3PSM"), lambda: selection_model(agg_fit.yi, agg_fit.vi))
    else:
        why = (f"k = {agg_fit.k} samples: at least 3 are needed" if agg_fit is not None
               else f"no composite per sample: {agg.note}")
        for step in (loo, infl, cum, bias_step):
            step.note = why
        sel_step = Step("3PSM", note=why)

    tick("published syntheses")
    comparison = _compare(df_main, main, published, cfg)
    return Analysis(cfg, df_all, df_main, main, seps, comparisons, mods, skipped, regs, agg,
                    loo, infl, cum, bias_step, comparison, years, selection=sel_step)


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
