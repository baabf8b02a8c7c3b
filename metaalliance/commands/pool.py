"""metaalliance pool: random-effects pooling, subgroups, meta-regression, three-level models."""

HELP = "pool effect sizes: random-effects model, subgroups (--by), meta-regression (--mods)"
EPILOG = """\
Examples:
  metaalliance pool                                   REML, z test, curated dataset
  metaalliance pool --method PM --test knha --json
  metaalliance pool --by rater --tau2-model pooled
  metaalliance pool --mods "~ instrument + year" --permutations 1000 --seed 1
  metaalliance pool --mods "~ year" --method DL --permutations 1000 --seed 1 --permci
                                                      + permutation-based CIs
  metaalliance pool --method DL --permutations 2000 --permci
                                                      intercept-only model: sign flips
  metaalliance pool --cluster citekey                 three-level model (finding in study)
  metaalliance pool --aggregate sample --rho 0.5      one composite per sample, then REML
  metaalliance pool --cluster citekey --working-model che --rho 0.6
                                                      CHE working model, CR2 robust SEs
  metaalliance pool --cluster citekey --rve --rho 0.8 robust variance estimation (robumeta)
  metaalliance pool --data my.csv --r r --n n --where population=adult

Numbers agree with R's metafor: rma(yi, vi, method, test), predict(), confint() (Q-profile),
rma(mods = ~ ...), permutest() (--permci: permutest(permci = TRUE); without --mods,
--permutations tests the intercept-only model by sign flips, as permutest() does, and prints
the meta-regression layout with the one coefficient intrcpt); --working-model che: rma.mv on
vcalc(vi, cluster, rho) with robust(clubSandwich = TRUE) and, with --mods, clubSandwich's HTZ Wald test; --rve: robumeta's
robu(modelweights, rho, small = TRUE). Correlations are pooled on Fisher's z; r = tanh(z) is shown
for display. Text moderators are categorical (first level, sorted, is the reference); numeric
columns enter as numbers; factor(col) makes a numeric column categorical."""


def register(sub, common):
    import argparse

    from metaalliance.cli import add_model_options
    from metaalliance.options import MODELWEIGHTS, TAU2_MODELS, WORKING_MODELS

    p = sub.add_parser("pool", help=HELP, description=HELP, epilog=EPILOG,
                       parents=[common["dataset"], common["selection"]],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g = add_model_options(p, "z (normal) or knha (Knapp-Hartung, t/F)")
    g.add_argument("--by", metavar="FIELD", help="subgroup analysis by this column")
    g.add_argument("--tau2-model", default="separate", choices=list(TAU2_MODELS),
                   help="subgroups: a tau^2 per subgroup (separate) or one common tau^2 (pooled)")
    g.add_argument("--mods", metavar="FORMULA", help='meta-regression, e.g. "~ instrument + year"')
    g.add_argument("--cluster", metavar="COL",
                   help="three-level model: findings within clusters of this column (REML)")
    g.add_argument("--aggregate", metavar="COL",
                   help="one composite effect per value of COL (metafor's aggregate(), "
                        "sampling errors correlated --rho within it), then a random-effects "
                        "model of the composites")
    g.add_argument("--working-model", choices=list(WORKING_MODELS), default="three-level",
                   help="with --cluster: three-level (default; independent sampling errors) or "
                        "che (correlated and hierarchical effects: sampling errors within a "
                        "cluster correlated --rho; CR2 cluster-robust SEs, Satterthwaite df)")
    g.add_argument("--sigma2-ci", action="store_true",
                   help="with --cluster (three-level model): profile-likelihood CIs of the two "
                        "variance components (metafor's confint() on rma.mv, to 1e-12)")
    g.add_argument("--rve", action="store_true",
                   help="with --cluster: robust variance estimation as robumeta's robu() "
                        "(small-sample corrected)")
    g.add_argument("--rho", type=float, default=None, metavar="R",
                   help="assumed correlation of the sampling errors of findings in one cluster: "
                        "--aggregate (default 0.5), CHE (default 0.6) or RVE CORR (default 0.8)")
    g.add_argument("--modelweights", choices=list(MODELWEIGHTS), default="CORR",
                   help="with --rve: correlated (CORR, default) or hierarchical (HIER) effects")
    g.add_argument("--permutations", type=int, metavar="N",
                   help="permutation test (metafor's permutest) with N permutations (exact, "
                        "every distinct permutation once, when there are at most N); with "
                        "--mods of the meta-regression, without it of the intercept-only "
                        "model (sign flips)")
    g.add_argument("--seed", type=int, default=None,
                   help="seed of the permutation test (--permci tests every refit against "
                        "the same permutations)")
    g.add_argument("--permci", action="store_true",
                   help="with --permutations: permutation-based CIs of the coefficients "
                        "(metafor's permutest(permci = TRUE): each bound is where the "
                        "one-sided permutation p-value of the refitted model crosses alpha/2, "
                        "found with R's uniroot; many permutation tests, so slow)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def _mods_columns(formula):
    from metaalliance.engine.formulas import formula_columns

    return formula_columns(formula)


def run(args) -> int:
    from metaalliance.cli import select
    from metaalliance.errors import OptionError

    if args.by and args.mods:
        raise OptionError("--by and --mods: use one (a subgroup analysis is --mods \"~ FIELD\" "
                          "with --tau2-model pooled)")
    if args.cluster and args.by:
        raise OptionError("--cluster cannot be combined with --by")
    if args.aggregate and (args.by or args.mods or args.cluster):
        raise OptionError("--aggregate cannot be combined with --by, --mods or --cluster")
    if (args.rve or args.working_model == "che") and not args.cluster:
        raise OptionError("--rve and --working-model che need --cluster COL")
    if args.rve and args.working_model == "che":
        raise OptionError("--rve and --working-model che: use one")
    if args.rho is not None and not (args.aggregate or args.rve or args.working_model == "che"):
        raise OptionError("--rho needs --aggregate COL, --rve or --working-model che")
    if getattr(args, "sigma2_ci", False) and (not args.cluster or args.rve
                                              or args.working_model == "che"):
        raise OptionError("--sigma2-ci needs --cluster COL (the three-level model; not with "
                          "--rve or --working-model che)")
    if args.permutations is not None and (args.by or args.cluster or args.aggregate):
        raise OptionError("--permutations cannot be combined with --by, --cluster or "
                          "--aggregate (permutest() is for rma.uni models)")
    if args.permutations is not None and args.permutations < 2:
        raise OptionError("--permutations: must be >= 2")
    if getattr(args, "permci", False) and args.permutations is None:
        raise OptionError("--permci needs --permutations N (the permutation test it inverts)")
    required = []
    if args.by:
        required.append(args.by)
    if args.mods:
        required += _mods_columns(args.mods)
    if args.cluster:
        required.append(args.cluster)
    if args.aggregate:
        required.append(args.aggregate)
    required = tuple(dict.fromkeys(required))
    # columns are checked here rather than through select(required_columns=...): that path of
    # tabular.read_effects overwrote the vi array (reported to the lead)
    sel = select(args)
    missing = [c for c in required if c not in sel.columns]
    if missing:
        raise OptionError(f"{sel.source}: no column {', '.join(map(repr, missing))} "
                          f"(columns: {', '.join(map(str, sel.columns))})")
    return pool_selection(sel, args, required)


def _which(sel, mask, n=10) -> str:
    """' (rows 3, 7)' for a CSV selection, ' (file finding id, ...)' for curated data."""
    import numpy as np

    idx = np.flatnonzero(mask)
    if getattr(sel, "rows", None) is not None:
        items = [str(sel.rows[i]) for i in idx[:n]]
        return f" (rows {', '.join(items)}{' ...' if idx.size > n else ''})"
    if {"file", "finding_id"} <= set(sel.columns):
        files, ids = sel.column("file"), sel.column("finding_id")
        items = [f"{files[i]} finding {ids[i]}" for i in idx[:n]]
        return f" ({', '.join(items)}{' ...' if idx.size > n else ''})"
    return ""


def _numeric_if_possible(df, cols, source="data"):
    """CSV moderator columns arrive as text: make a column numeric when all its values are.

    A column that is mostly numbers with some text stays categorical, with a warning naming
    the first text value (a typo in a numeric moderator would otherwise silently turn it
    into one dummy per value)."""
    import warnings

    import pandas as pd

    from metaalliance.errors import MetaAllianceWarning

    for c in cols:
        s = df[c]
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            continue
        conv = pd.to_numeric(s, errors="coerce")
        if conv.notna().sum() == s.notna().sum() and s.notna().any():
            df[c] = conv
        elif conv.notna().sum() > s.notna().sum() / 2:
            bad = s[conv.isna() & s.notna()].astype(str).iloc[0]
            warnings.warn(f"{source}: moderator {c}: {bad!r} is not a number, so {c} is "
                          "treated as categorical (one coefficient per value); fix the value "
                          f"if {c} is meant as a number", MetaAllianceWarning)
    return df



def composite_fit(df, yi, vi, cluster: str, rho: float, **model):
    """One composite effect per value of ``df[cluster]`` (``aggregation.aggregate``, metafor's
    ``aggregate(struct = "CS", rho)``), then ``models.random_effects`` of the composites.

    Returns (fit, frame): ``frame`` has one row per composite in the fit's order (cluster,
    label, citekey, year, k, n), for a forest plot. ``model``: method, test, level, measure,
    control.
    """
    import numpy as np
    import pandas as pd

    from metaalliance.engine import aggregation, models
    from metaalliance.formatting import distinct_labels

    keys_all = df[cluster].astype(str).to_numpy()
    agg = aggregation.aggregate(np.asarray(yi, float), np.asarray(vi, float), keys_all, rho=rho)
    keys = [str(c) for c in agg.cluster]
    label_col = "label" if "label" in df.columns else cluster
    first = df.assign(_key=keys_all).groupby("_key", sort=False)
    labels = distinct_labels([str(first[label_col].first()[c]) for c in keys], keys)
    frame = pd.DataFrame({"cluster": keys, "label": labels, "citekey": keys,
                          "k": [int(x) for x in agg.k]})
    if "year" in df.columns:
        years = pd.to_numeric(df["year"], errors="coerce").groupby(keys_all).min()
        frame["year"] = [years.get(c) for c in keys]
    if "n" in df.columns:
        ns = pd.to_numeric(df["n"], errors="coerce").groupby(keys_all).max()
        frame["n"] = [ns.get(c) for c in keys]
    fit = models.random_effects(agg.yi, agg.vi, labels=labels, **model)
    return fit, frame


def pool_selection(sel, args, used=()) -> int:
    """Fit and print the model for a ``cli.Selection`` (frame, yi, vi, labels, measure, omitted)."""
    import warnings

    import numpy as np

    from metaalliance.engine import models
    from metaalliance.cli import print_json, progress_bar
    from metaalliance.engine.aggregation import DEFAULT_RHO
    from metaalliance.errors import MetaAllianceWarning

    # the intercept-only and the three-level model need no DataFrame (building one imports
    # pandas): they take the cluster column from sel.column()
    lean = not (args.mods or args.by or getattr(args, "aggregate", None) or args.rve
                or args.working_model == "che")
    df = None if lean else sel.frame.reset_index(drop=True).copy()
    yi, vi, labels = np.asarray(sel.yi, float), np.asarray(sel.vi, float), list(sel.labels)
    omitted = int(sel.omitted)
    keep = np.ones(len(yi), dtype=bool)
    if used:
        missing = np.zeros(len(yi), dtype=bool)
        for c in used:
            missing = missing | sel.missing(c)
        if missing.all():
            from metaalliance.errors import DataError

            raise DataError(f"{sel.source}: every row has a missing value in {', '.join(used)}")
        if missing.any():
            n = int(missing.sum())
            warnings.warn(f"{sel.source}: omitted {n} row(s) with a missing value in "
                          f"{', '.join(used)}{_which(sel, missing)}", MetaAllianceWarning)
            omitted += n
            keep = ~missing
            if df is not None:
                df = df[keep].reset_index(drop=True)
            yi, vi = yi[keep], vi[keep]
            labels = [lb for lb, kp in zip(labels, keep) if kp]
        if df is not None:
            df = _numeric_if_possible(df, [c for c in used if c not in (
                args.by, args.cluster, getattr(args, "aggregate", None))], sel.source)
    common = dict(method=args.method, test=args.test, level=args.level, labels=labels,
                  measure=sel.measure)
    if args.cluster and (args.rve or args.working_model == "che"):
        return _dependent(args, df, yi, vi, sel.measure, omitted)
    if args.cluster:
        # rma.mv has its own optimiser: --control concerns rma.uni's tau^2 iterations only
        kw = {}
        if args.mods:
            X, names, keep = models.design_matrix(df, args.mods)
            kw = dict(X=X, coef_names=names)
        # rma.mv's t test (df k - p) is the three-level counterpart of knha, as `forest`
        common["test"] = "t" if args.test == "knha" else args.test
        cluster = np.array([str(v) for v, kp in zip(sel.column(args.cluster), keep) if kp])
        res = models.three_level(yi, vi, cluster, **common, **kw)
        out = res.to_dict()
        out.setdefault("omitted", omitted)
        cis = None
        if getattr(args, "sigma2_ci", False):
            from metaalliance.engine.multilevel_ci import sigma2_profile_ci

            cis = sigma2_profile_ci(res)
            out["sigma2_ci"] = [c.to_dict() for c in cis]
        if args.json:
            print_json(out)
        else:
            print(res.summary())
            if cis:
                print(f"\n{res.level:g}% profile-likelihood CIs of the variance components "
                      "(metafor confint()):")
                for c, what in zip(cis, ("between clusters", "within clusters")):
                    flag = " (bound at the search limit)" if (c.upper_at_bound
                                                              and c.ci_upper > 0) else ""
                    print(f"sigma^2 {what}: {c.estimate:.4f} [{c.ci_lower:.4f}, "
                          f"{c.ci_upper:.4f}]{flag}")
        return 0
    if getattr(args, "aggregate", None):
        rho = DEFAULT_RHO if args.rho is None else args.rho
        res, _ = composite_fit(df, yi, vi, args.aggregate, rho, method=args.method,
                               test=args.test, level=args.level, measure=sel.measure,
                               control=args.control)
        out = res.to_dict()
        out["omitted"] = omitted
        out["aggregate"] = {"cluster": args.aggregate, "rho": rho, "k_findings": int(len(yi))}
        if args.json:
            print_json(out)
        else:
            print(f"One composite per {args.aggregate} (metafor aggregate(), rho = {rho:g}): "
                  f"{len(yi)} findings -> k = {res.k}")
            print(res.summary())
        return 0
    if args.by:
        res = models.subgroups(yi, vi, df[args.by].to_numpy(), tau2_model=args.tau2_model,
                               by=args.by, control=args.control, **common)
        out = res.to_dict()
        out["omitted"] = omitted
    elif args.mods or args.permutations is not None:
        import sys

        # progress bars on a terminal (stderr) while the permutations are fitted and while
        # the permci bounds are searched (each step of a search is a permutation test)
        bars = args.permutations is not None and sys.stderr.isatty() and not args.json
        perm_progress, close = progress_bar(bars, "perm", "permutations")
        ci_progress, ci_close = progress_bar(bars and getattr(args, "permci", False), "bound",
                                             "permutation CI")

        def progress(done, total):      # the test's bar goes when it is done (before permci)
            perm_progress(done, total)
            if done >= total:
                close()

        progress = progress if perm_progress is not None else None
        kw = dict(permutations=args.permutations, seed=args.seed, progress=progress,
                  control=args.control, permci=bool(getattr(args, "permci", False)),
                  permci_progress=ci_progress, **common)
        try:
            if args.mods:
                res = models.meta_regression(yi, vi, df, args.mods, **kw)
            else:       # permutest() of the intercept-only model: sign flips
                res = models.meta_regression_matrix(yi, vi, np.ones((len(yi), 1)),
                                                    names=["intrcpt"], **kw)
        finally:
            close()
            ci_close()
        out = res.to_dict()
        out["omitted"] = omitted + res.omitted
    else:
        import dataclasses

        res = models.random_effects(yi, vi, control=args.control, **common)
        res = dataclasses.replace(res, omitted=omitted)
        out = res.to_dict()
    if args.json:
        print_json(out)
    else:
        print(res.summary())
    return 0


def _dependent(args, df, yi, vi, measure, omitted) -> int:
    """--working-model che or --rve: the CHE model with CR2 inference, or robumeta's RVE."""
    from metaalliance.cli import print_json
    from metaalliance.engine import models

    cluster = df[args.cluster].astype(str).to_numpy()
    kw = {}
    if args.mods:
        X, names, _ = models.design_matrix(df, args.mods)
        kw = dict(X=X, names=names)
    if args.rve:
        from metaalliance.engine.rve import DEFAULT_RVE_RHO, robu

        res = robu(yi, vi, cluster, modelweights=args.modelweights,
                   rho=DEFAULT_RVE_RHO if args.rho is None else args.rho, level=args.level,
                   measure=measure, **kw)
    else:
        from metaalliance.engine.che import DEFAULT_CHE_RHO, che

        res = che(yi, vi, cluster, rho=DEFAULT_CHE_RHO if args.rho is None else args.rho,
                  level=args.level, measure=measure, **kw)
    out = res.to_dict()
    out["omitted"] = omitted
    if args.json:
        print_json(out)
    else:
        print(res.summary())
    return 0
