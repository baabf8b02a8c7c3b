"""metaalliance bias: small-study effects and publication bias of a random-effects model."""

HELP = ("publication bias: Egger's test, rank test, trim and fill, PET-PEESE, fail-safe N, "
        "3PSM selection model")
EPILOG = """\
Examples:
  metaalliance bias                                  curated dataset, REML, z test
  metaalliance bias --where rater=client --json
  metaalliance bias --estimator R0 --side left
  metaalliance bias --data my.csv --yi yi --vi vi --method DL

Numbers agree with R's metafor: regtest(res) (mixed-effects model with the standard error as
moderator), ranktest(res), trimfill(res, estimator), fsn(yi, vi, type = "Rosenthal" |
"Orwin" | "Rosenberg"); PET and PEESE are lm(yi ~ sqrt(vi), weights = 1/vi) and
lm(yi ~ vi, weights = 1/vi), with PEESE chosen when the PET intercept is significant in a
one-sided t-test at --alpha in the direction of the pooled estimate (Stanley & Doucouliagos
2014). The 3PSM is selmodel(rma(yi, vi, method = "ML"), type = "stepfun", steps = .025)
(`metaalliance selection` fits the other selection models). Findings are treated as independent here, as in `pool` without --cluster."""


def register(sub, common):
    import argparse

    from metaalliance.cli import add_model_options
    from metaalliance.options import SIDES, TRIMFILL_ESTIMATORS

    p = sub.add_parser("bias", help=HELP, description=HELP, epilog=EPILOG,
                       parents=[common["dataset"], common["selection"]],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p, "z (normal) or knha (Knapp-Hartung): used by Egger's test, as "
                         "regtest()")
    b = p.add_argument_group("bias analyses")
    b.add_argument("--estimator", default="L0", choices=list(TRIMFILL_ESTIMATORS),
                   help="trim-and-fill estimator of the number of missing studies (L0)")
    b.add_argument("--side", choices=list(SIDES), default=None,
                   help="side of the funnel where studies are missing (default: chosen as "
                        "metafor does, from the sign of Egger's slope)")
    b.add_argument("--alpha", type=float, default=0.05,
                   help="significance level of the PET test and of fail-safe N (0.05)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def _back(d, keys, measure):
    """Add tanh of the given keys for correlations (display scale r)."""
    import math
    if measure == "ZCOR" and d is not None:
        d["back_transformed"] = {k: math.tanh(d[k]) for k in keys if d.get(k) is not None}
    return d


def three_psm(fit):
    """The 3PSM (step function at .025) for the bias section: (result or None, note or None)."""
    import warnings

    from metaalliance.analyses.selection import selection_model
    from metaalliance.errors import MetaAllianceError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return selection_model(fit.yi, fit.vi, type="stepfun", steps=(0.025,)), None
    except MetaAllianceError as exc:
        return None, f"3PSM selection model not fitted: {exc}"


def to_json(res, fit, omitted: int, psm=None) -> dict:
    out = res.to_dict()
    out["selection"] = None if psm is None else _back(psm.to_dict(),
                                                      ("estimate", "ci_lower", "ci_upper"),
                                                      fit.measure)
    out["omitted"] = omitted
    out["measure"] = fit.measure
    out["estimate"] = fit.estimate
    if out["egger"] is not None:
        _back(out["egger"], ("limit_estimate", "limit_ci_lower", "limit_ci_upper"), fit.measure)
    if out["trimfill"] is not None:
        _back(out["trimfill"], ("estimate", "ci_lower", "ci_upper"), fit.measure)
    if out["pet_peese"] is not None:
        _back(out["pet_peese"], ("estimate", "ci_lower", "ci_upper"), fit.measure)
    return out


def _p(p):
    return "<.0001" if p < 1e-4 else f"{p:.4f}"


def text(res, fit, psm=None, psm_note=None) -> str:
    """The readable form (the only place these numbers are rounded)."""
    import math

    r = fit.measure == "ZCOR"

    def est(x):
        return f"{x:.4f}" + (f" (r = {math.tanh(x):.4f})" if r else "")

    lines = [f"Publication bias (k = {res.k}; {res.method}, test {res.test}); "
             f"pooled estimate {est(fit.estimate)}", ""]
    e = res.egger
    if e is not None:
        stat = "z" if e.df is None else f"t({e.df})"
        lines += ["Egger's regression test (metafor regtest: mixed-effects model, predictor sei)",
                  f"  {stat} = {e.stat:.4f}, p = {_p(e.pvalue)}",
                  f"  limit estimate (se -> 0): {est(e.limit_estimate)}, "
                  f"CI [{e.limit_ci_lower:.4f}, {e.limit_ci_upper:.4f}]", ""]
    k = res.rank
    if k is not None:
        kind = "exact" if k.exact else "normal approximation, ties"
        lines += ["Rank correlation test (Begg & Mazumdar; metafor ranktest)",
                  f"  Kendall's tau = {k.tau:.4f}, p = {_p(k.pvalue)} ({kind})", ""]
    t = res.trimfill
    if t is not None:
        f = t.fit
        lines += [f"Trim and fill ({t.estimator}; metafor trimfill)",
                  f"  estimated missing studies on the {t.side} side: {t.k0} "
                  f"(SE = {t.se_k0:.4f})"
                  + (f", p(k0 = 0) = {_p(t.p_k0)}" if t.p_k0 is not None else "")]
        if t.k0 > 0:
            lines += [f"  adjusted estimate: {est(f.estimate)}, CI [{f.ci_lower:.4f}, "
                      f"{f.ci_upper:.4f}], tau^2 = {f.tau2:.4f}, k = {f.k}"]
        lines.append("")
    pp = res.pet_peese
    if pp is not None:
        lines += ["PET-PEESE (WLS, weights 1/vi; Stanley & Doucouliagos 2014)",
                  f"  PET   intercept {pp.pet.intercept:.4f} (SE {pp.pet.intercept_se:.4f}), "
                  f"t({pp.pet.df}) = {pp.pet.intercept_t:.4f}, one-sided p ({pp.direction}) = "
                  f"{_p(pp.pet_pvalue_one_sided)}",
                  f"  PEESE intercept {pp.peese.intercept:.4f} (SE {pp.peese.intercept_se:.4f})",
                  f"  selected: {pp.selected}, estimate {est(pp.estimate)}, "
                  f"CI [{pp.ci_lower:.4f}, {pp.ci_upper:.4f}]", ""]
    if psm is not None:
        lines += ["3PSM selection model (step function at p = .025; metafor selmodel, ML)",
                  f"  adjusted estimate {est(psm.estimate)}"
                  + (f", CI [{psm.ci_lower:.4f}, {psm.ci_upper:.4f}]"
                     if psm.ci_lower is not None else "")
                  + f", tau^2 = {psm.tau2:.4f}",
                  f"  delta (p > .025) = {psm.delta[1]:.4f}; LRT of selection: "
                  f"{psm.lrt:.4f} (df = {psm.lrt_df}), p = {_p(psm.lrt_p)}", ""]
    elif psm_note:
        lines += [psm_note, ""]
    n = res.failsafe_n
    orwin = "inf" if n.orwin is None else str(n.orwin)
    lines += ["Fail-safe N (metafor fsn)",
              f"  Rosenthal: {n.rosenthal} (p = {_p(n.rosenthal_pvalue)}, alpha = {n.alpha:g})",
              f"  Orwin:     {orwin} (mean {n.orwin_mean:.4f}, target {n.orwin_target:.4f})",
              f"  Rosenberg: {n.rosenberg} (p = {_p(n.rosenberg_pvalue)})"]
    for note in res.notes:
        lines += ["", f"Note: {note}"]
    return "\n".join(lines)


def run(args) -> int:
    from metaalliance.analyses import bias
    from metaalliance.engine import models
    from metaalliance.cli import print_json, select
    from metaalliance.errors import ModelError, OptionError

    if not 0 < args.alpha < 1:
        raise OptionError(f"--alpha: must lie between 0 and 1, got {args.alpha:g}")
    sel = select(args)
    if len(sel.yi) < 2:
        raise ModelError(f"bias analyses need at least 2 findings (k = {len(sel.yi)})")
    fit = models.random_effects(sel.yi, sel.vi, method=args.method, test=args.test,
                                level=args.level, labels=list(sel.labels), measure=sel.measure,
                                control=args.control)
    res = bias.run_all(fit, estimator=args.estimator, side=args.side, alpha=args.alpha,
                       control=args.control)
    psm, psm_note = three_psm(fit)
    if args.json:
        print_json(to_json(res, fit, int(sel.omitted), psm))
    else:
        print(text(res, fit, psm, psm_note))
    return 0
