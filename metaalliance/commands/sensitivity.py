"""metaalliance sensitivity: leave-one-out, influence, cumulative and GOSH analyses."""

HELP = "sensitivity: leave-one-out, influence diagnostics, cumulative analysis, GOSH"
EPILOG = """\
Examples:
  metaalliance sensitivity                           curated dataset, REML, z test
  metaalliance sensitivity --json --gosh 10000 --seed 1
  metaalliance sensitivity --order n --decreasing    cumulative analysis, largest study first
  metaalliance sensitivity --data my.csv --r r --n n --order year

Numbers agree with R's metafor: leave1out(res), influence(res) (rstudent, dffits, cook.d,
cov.r, tau2.del, QE.del, hat, weight, dfbetas and metafor's '*' flag), baujat(res),
cumul(res, order = year), gosh(res) (all subsets when 2^k - 1 <= --gosh, else --gosh random
subsets drawn with --seed). Cumulative order: --order COL, by default the year column when
the data have one, else the data order (ties keep the data order). Findings are treated as
independent here, as in `pool` without --cluster."""


def register(sub, common):
    import argparse

    from metaalliance.cli import add_model_options

    p = sub.add_parser("sensitivity", help=HELP, description=HELP, epilog=EPILOG,
                       parents=[common["dataset"], common["selection"]],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p, "z (normal) or knha (Knapp-Hartung, t)")
    s = p.add_argument_group("sensitivity analyses")
    s.add_argument("--order", metavar="COL",
                   help="cumulative analysis: add findings in the order of this column "
                        "(default: year when present, else the data order)")
    s.add_argument("--decreasing", action="store_true",
                   help="cumulative analysis: largest --order value first")
    s.add_argument("--gosh", type=int, metavar="N",
                   help="also run GOSH: all subsets when there are at most N, else N random "
                        "subsets (needs --seed then)")
    s.add_argument("--seed", type=int, default=None, help="seed of the GOSH random subsets")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def _order_key(frame, col):
    """The sort key for the cumulative analysis: numbers when the column is numeric (or all
    its values parse as numbers, as CSV columns arrive as text), else text."""
    import pandas as pd

    from metaalliance.errors import DataError

    s = frame[col]
    if not pd.api.types.is_numeric_dtype(s):
        text = s.astype(str).str.strip()
        num = pd.to_numeric(text, errors="coerce")
        if num.notna().all():
            s = num
        else:
            if (text == "").any() or s.isna().any():
                raise DataError(f"--order {col}: the column has missing values")
            return text.to_numpy(dtype=object)
    if s.isna().any():
        raise DataError(f"--order {col}: the column has missing values")
    return s.to_numpy(dtype=float)


def _p(p):
    return "<.0001" if p < 1e-4 else f"{p:.4f}"


def _table(header, rows, aligns=None):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(header)]
    aligns = aligns or ["<"] + [">"] * (len(header) - 1)
    def line(cells):
        return "  ".join(f"{str(c):{a}{w}}" for c, a, w in zip(cells, aligns, widths)).rstrip()
    return [line(header)] + [line(r) for r in rows]


def text(res, fit) -> str:
    """The readable form (the only place these numbers are rounded)."""
    stat = "t" if res.test == "knha" else "z"
    out = [f"Sensitivity analyses (k = {res.k}; {res.method}, test {res.test}); "
           f"pooled estimate {fit.estimate:.4f}, tau^2 = {fit.tau2:.4f}, I^2 = {fit.i2:.2f}%", ""]
    lo = res.leave_one_out
    out.append("Leave-one-out (metafor leave1out): the model without each finding")
    out += _table(["omitted", "estimate", "se", stat, "pval", "ci.lb", "ci.ub", "Q", "Qp",
                   "tau2", "I2", "H2"],
                  [[lab, f"{lo.estimate[i]:.4f}", f"{lo.se[i]:.4f}", f"{lo.stat[i]:.4f}",
                    _p(lo.pvalue[i]), f"{lo.ci_lower[i]:.4f}", f"{lo.ci_upper[i]:.4f}",
                    f"{lo.q[i]:.4f}", _p(lo.q_pvalue[i]), f"{lo.tau2[i]:.4f}",
                    f"{lo.i2[i]:.2f}", f"{lo.h2[i]:.4f}"] for i, lab in enumerate(lo.labels)])
    inf = res.influence
    bj = res.baujat
    out += ["", "Influence diagnostics (metafor influence; * = influential by metafor's rule)"]
    out += _table(["finding", "rstudent", "dffits", "cook.d", "cov.r", "tau2.del", "QE.del",
                   "hat", "weight", "dfbs", "inf", "baujat.x", "baujat.y"],
                  [[lab, f"{inf.rstudent[i]:.4f}", f"{inf.dffits[i]:.4f}",
                    f"{inf.cook_d[i]:.4f}", f"{inf.cov_r[i]:.4f}", f"{inf.tau2_del[i]:.4f}",
                    f"{inf.qe_del[i]:.4f}", f"{inf.hat[i]:.4f}", f"{inf.weight[i]:.2f}",
                    f"{inf.dfbetas[i]:.4f}", "*" if inf.inf[i] else "",
                    f"{bj.x[i]:.4f}", f"{bj.y[i]:.4f}"] for i, lab in enumerate(inf.labels)])
    cu = res.cumulative
    by = f"ordered by {cu.order_by}" if cu.order_by else "in data order"
    out += ["", f"Cumulative meta-analysis (metafor cumul), {by}"]
    out += _table(["added", "k", "estimate", "se", stat, "pval", "ci.lb", "ci.ub", "tau2", "I2"],
                  [[lab, int(cu.k[i]), f"{cu.estimate[i]:.4f}", f"{cu.se[i]:.4f}",
                    f"{cu.stat[i]:.4f}", _p(cu.pvalue[i]), f"{cu.ci_lower[i]:.4f}",
                    f"{cu.ci_upper[i]:.4f}", f"{cu.tau2[i]:.4f}", f"{cu.i2[i]:.2f}"]
                   for i, lab in enumerate(cu.labels)])
    g = res.gosh
    if g is not None:
        d = g.summary_dict()
        kind = "all" if g.exact else f"random (seed {g.seed})"
        out += ["", f"GOSH (metafor gosh): {d['subsets']} {kind} subsets of the {d['k']} findings"]
        for key, name in (("estimate", "estimate"), ("i2", "I2")):
            q = d[key]["quantiles"]
            out.append(f"  {name:<8} mean {d[key]['mean']:.4f}, sd {d[key]['sd']:.4f}, "
                       f"2.5% {q['0.025']:.4f}, median {q['0.5']:.4f}, 97.5% {q['0.975']:.4f}")
        out += ["  mean estimate / I2 of the subsets with and without each finding:"]
        out += ["  " + line for line in _table(
            ["finding", "est.with", "est.without", "I2.with", "I2.without"],
            [[s["label"], *(("" if s[k] is None else f"{s[k]:.4f}") for k in
                            ("estimate_with", "estimate_without", "i2_with", "i2_without"))]
             for s in d["studies"]])]
    return "\n".join(out)



def run(args) -> int:
    import sys

    from metaalliance.engine import models
    from metaalliance.analyses import sensitivity
    from metaalliance.cli import print_json, progress_bar, select
    from metaalliance.errors import ModelError, OptionError

    if args.gosh is not None and args.gosh < 2:
        raise OptionError(f"--gosh: must be >= 2, got {args.gosh}")
    if args.seed is not None and args.gosh is None:
        raise OptionError("--seed needs --gosh N")
    required = (args.order,) if args.order else ()
    sel = select(args, required_columns=required)
    k = len(sel.yi)
    if k < 2:
        raise ModelError(f"sensitivity analyses need at least 2 findings (k = {k})")
    if args.gosh is not None and 2.0**k - 1 > args.gosh and args.seed is None:
        raise OptionError(f"--gosh {args.gosh}: fewer than the 2^{k} - 1 subsets, so random "
                          "subsets are drawn; give --seed S to make them reproducible")
    order_by = args.order
    if order_by is None and "year" in sel.frame.columns:
        order_by = "year"
    order = _order_key(sel.frame.reset_index(drop=True), order_by) if order_by else None
    fit = models.random_effects(sel.yi, sel.vi, method=args.method, test=args.test,
                                level=args.level, labels=list(sel.labels), measure=sel.measure,
                                control=args.control)
    progress, close = progress_bar(sys.stderr.isatty() and not args.json, "fit", "sensitivity")
    try:
        res = sensitivity.run_all(fit, order=order, order_by=order_by,
                                  decreasing=args.decreasing, gosh_subsets=args.gosh,
                                  seed=args.seed, progress=progress, control=args.control)
    finally:
        close()
    if args.json:
        out = res.to_dict()
        out["omitted"] = int(sel.omitted)
        out["measure"] = sel.measure
        print_json(out)
    else:
        print(text(res, fit))
    return 0
