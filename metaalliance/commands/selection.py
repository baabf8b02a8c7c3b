"""metaalliance selection: selection models for publication bias (metafor's selmodel)."""

HELP = "selection models for publication bias: step function (3PSM) and smooth weight functions"
EPILOG = """\
Examples:
  metaalliance selection                                  3PSM: step function at p = .025
  metaalliance selection --steps 0.025,0.5 --json         four-parameter step function
  metaalliance selection --type negexp                    smooth weight function
  metaalliance selection --type beta --alternative two.sided
  metaalliance selection --data my.csv --yi yi --vi vi --mods "~ year"

Numbers agree with R's metafor: selmodel(rma(yi, vi, method = "ML"), type, steps, alternative)
(maximum likelihood; estimates and the likelihood-ratio test of selection to 1e-4, SEs from the
numerical Hessian to 1e-3). The estimate is on the analysis scale (Fisher z for correlations,
as `pool`), with r = tanh(z) shown for display. p-values are one-sided (alternative greater:
large positive effects are the 'significant' ones). Where metafor stops (an interval of the
step function without any observed p-value) this command stops with its message."""


def register(sub, common):
    import argparse

    from metaalliance.cli import _level
    from metaalliance.options import ALTERNATIVES, SELECTION_TYPES

    p = sub.add_parser("selection", help=HELP, description=HELP, epilog=EPILOG,
                       parents=[common["dataset"], common["selection"]],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("selection model")
    g.add_argument("--type", default="stepfun", choices=list(SELECTION_TYPES),
                   help="weight function (default stepfun: Vevea-Hedges step function)")
    g.add_argument("--steps", default=None, metavar="P[,P...]",
                   help="cut points of the step function (default 0.025: the 3PSM); for "
                        "halfnorm/negexp/logistic/power an optional single p below which "
                        "w = 1")
    g.add_argument("--alternative", default="greater", choices=list(ALTERNATIVES),
                   help="direction of the one-sided p-values (default greater, as metafor)")
    g.add_argument("--mods", metavar="FORMULA",
                   help='moderators of the mean, e.g. "~ year" (as selmodel on rma(mods = ...))')
    g.add_argument("--level", type=_level, default=95.0,
                   help="confidence level in %% (default 95)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def _steps(text, type_):
    from metaalliance.errors import OptionError

    if text is None:
        return (0.025,) if type_ == "stepfun" else ()
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise OptionError(f"--steps: {text!r} is not a comma-separated list of numbers") \
            from None


def text(res, measure) -> str:
    import math

    out = res.summary()
    if measure == "ZCOR":
        out += (f"\n  back-transformed (r): {math.tanh(res.estimate):.4f}" +
                (f" [{math.tanh(res.ci_lower):.4f}, {math.tanh(res.ci_upper):.4f}]"
                 if res.ci_lower is not None else ""))
    return out


def run(args) -> int:
    import math

    import numpy as np

    from metaalliance.analyses.selection import selection_model
    from metaalliance.cli import print_json, select
    from metaalliance.errors import OptionError

    sel = select(args)
    yi, vi = np.asarray(sel.yi, float), np.asarray(sel.vi, float)
    kw = {}
    if args.mods:
        from metaalliance.engine import models

        df = sel.frame.reset_index(drop=True)
        X, names, keep = models.design_matrix(df, args.mods)
        if not keep.all():
            raise OptionError(f"{sel.source}: --mods: {int((~keep).sum())} row(s) have a "
                              "missing moderator value; select complete rows with --where")
        kw = dict(X=X, names=names)
    res = selection_model(yi, vi, type=args.type, steps=_steps(args.steps, args.type),
                          alternative=args.alternative, level=args.level, **kw)
    if args.json:
        out = res.to_dict()
        out["omitted"] = int(sel.omitted)
        out["measure"] = sel.measure
        if sel.measure == "ZCOR":
            out["back_transformed"] = {k: math.tanh(out[k]) for k in
                                       ("estimate", "ci_lower", "ci_upper")
                                       if out[k] is not None}
        print_json(out)
    else:
        print(text(res, sel.measure))
    return 0
