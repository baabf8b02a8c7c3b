"""metaalliance multiverse: every defensible specification (specification curve)."""

HELP = "multiverse analysis: every 'which data' x 'how to pool' specification, with its curve"
EPILOG = """\
Examples:
  metaalliance multiverse                               default factors, curated dataset
  metaalliance multiverse --config multiverse.toml --json
  metaalliance multiverse --out results/multiverse      table (CSV), JSON and figures
  metaalliance multiverse --bootstrap 500 --seed 1 --jobs 2
  metaalliance multiverse --scheduler tcp://10.0.0.5:8786 --bootstrap 1000 --seed 1
  metaalliance multiverse --data my.csv --r r --n n --cluster study

"Which" factors (subsets of the findings; "all" = not subset): population, diagnosis,
setting, instrument_family, rater, timing, outcome_domain, effect_type, conversion,
stat_type; levels with fewer than min_k findings and "unspecified" levels are dropped and
listed; a subset needs min_k findings (default 5) in min_samples samples (default 3).
"How" factors: method (REML, DL, PM), model (univariate, three_level, composite, che),
test (z, knha), bias (none, trimfill, pet_peese, 3psm). che and 3psm run when their modules
are installed, else the summary lists them as unavailable. multiverse.toml sets any of:
which, methods, models, tests, bias, min_k, min_samples, exclude_levels, dedupe, level,
composite_rho, max_specifications, control (top level or in a [multiverse] table; the
shipped multiverse.toml lists the defaults). Labels that are not options of `pool`:
PET-PEESE rows carry method "WLS" and test "t" (a weighted regression, independent of the
tau^2 estimator), 3PSM rows method "ML", three-level rows test "t" for rma.mv's t test, CHE
rows test "cr2" (cluster-robust).

Every specification equals the single analysis it names (`pool --where ... --method ...
--test ...`; `pool --cluster sample` for three_level; `bias` for trimfill and pet_peese).
The summary gives the number of specifications, the share whose CI lies above zero, the
median and 5th/95th percentiles of r and which factor moves the estimate most (the share of
the variance of the estimates between its levels). --bootstrap N: the parametric bootstrap
under the null of Voracek et al. (2019): p-values for the median and for the share of
significant specifications."""


def register(sub, common):
    import argparse

    p = sub.add_parser("multiverse", help=HELP, description=HELP, epilog=EPILOG,
                       parents=[common["dataset"], common["selection"]],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("multiverse")
    g.add_argument("--config", metavar="TOML",
                   help="multiverse.toml choosing factors, methods, models, tests, bias "
                        "adjustments and the minimum k (default: the documented set)")
    g.add_argument("--cluster", metavar="COL", default=None,
                   help="column naming each finding's independent sample (default: sample "
                        "when the data have it; without one only univariate models run)")
    g.add_argument("--bootstrap", type=int, metavar="N", default=None,
                   help="parametric bootstrap under the null with N replicates")
    g.add_argument("--seed", type=int, default=None, help="seed of the bootstrap")
    g.add_argument("--jobs", type=int, default=1, metavar="J",
                   help="local worker processes (joblib/loky; -1 = all cores; default 1)")
    g.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run on a Dask cluster (dask.distributed scheduler address, e.g. "
                        "tcp://host:8786) through joblib's dask backend")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="write specifications.csv (and .parquet when pyarrow is installed), "
                        "multiverse.json, specification_curve.pdf/.png and "
                        "multiverse_histogram.pdf/.png into DIR")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def _cluster(args, sel):
    from metaalliance.errors import OptionError

    col = args.cluster
    if col is None:
        return ("sample" if "sample" in sel.frame.columns else None), None
    if col not in sel.frame.columns:
        where = "the curated dataset" if sel.source == "curated" else sel.source
        raise OptionError(f"--cluster {col}: {where} has no such column (columns: "
                          f"{', '.join(map(str, sel.frame.columns))})")
    return col, None


def run(args) -> int:
    import sys

    import numpy as np

    from metaalliance.analyses import multiverse as mvmod
    from metaalliance.cli import note, print_json, progress_bar, select
    from metaalliance.errors import DataError, OptionError

    if args.jobs == 0 or args.jobs < -1:
        raise OptionError(f"--jobs: must be >= 1 or -1 (all cores), got {args.jobs}")
    if args.bootstrap is not None and args.bootstrap < 1:
        raise OptionError(f"--bootstrap: must be >= 1, got {args.bootstrap}")
    if args.bootstrap is not None and args.seed is None:
        raise OptionError("--bootstrap needs --seed S (so the p-values can be reproduced)")
    cfg = mvmod.load_config(args.config) if args.config else mvmod.MultiverseConfig()
    sel = select(args)
    col, _ = _cluster(args, sel)
    frame = sel.frame.reset_index(drop=True)
    cluster = None
    yi, vi = np.asarray(sel.yi, float), np.asarray(sel.vi, float)
    if col is not None:
        c = frame[col]
        miss = c.isna().to_numpy() | (c.astype(str).str.strip() == "").to_numpy()
        if miss.all():
            raise DataError(f"{sel.source}: every row has a missing {col}")
        if miss.any():
            note(f"{int(miss.sum())} row(s) without a {col} omitted")
            frame, yi, vi = frame[~miss].reset_index(drop=True), yi[~miss], vi[~miss]
        cluster = frame[col].astype(str).to_numpy()
    tty = sys.stderr.isatty() and not args.json
    mv = mvmod.enumerate_specifications(frame, yi, vi, cluster, cfg, sel.measure)
    progress, close = progress_bar(tty, "task", "multiverse")
    try:
        mvmod.fit_specifications(mv, jobs=args.jobs, scheduler=args.scheduler,
                                 progress=progress)
    finally:
        close()
    summary = mvmod.summarise(mv)
    if args.bootstrap is not None:
        progress, close = progress_bar(tty, "rep", "bootstrap")
        try:
            summary["bootstrap"] = mvmod.bootstrap(mv, args.bootstrap, args.seed,
                                                   jobs=args.jobs, scheduler=args.scheduler,
                                                   progress=progress)
        finally:
            close()
    out = {"specifications": mvmod.specifications_json(mv), "summary": summary,
           "failed": mv.failed}
    if args.out:
        write_outputs(args.out, mv, out)
    if args.json:
        print_json(out)
    else:
        print(text_summary(summary, args.out))
    return 0


def write_outputs(folder, mv, out) -> None:
    """specifications.csv, multiverse.json and the two figures (PDF + PNG), all-or-nothing."""
    import io
    import json
    from pathlib import Path

    from metaalliance.dataset.fileio import write_all
    from metaalliance.figures.style import save_figure
    from metaalliance.figures import specification_curve as sc

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = mv.results.drop(columns=["subset"])
    buf = io.StringIO()
    table.to_csv(buf, index=False, float_format="%.17g")
    files = {folder / "specifications.csv": buf.getvalue(),
             folder / "multiverse.json": json.dumps(out, indent=2, allow_nan=False)}
    try:
        pq = io.BytesIO()
        table.to_parquet(pq, index=False)
        files[folder / "specifications.parquet"] = pq.getvalue()
    except ImportError:
        from metaalliance.cli import note
        note("specifications.parquet not written: Parquet needs pyarrow "
             "(pip install pyarrow); the CSV has the same table")
    write_all(files)
    if mv.results.empty:
        from metaalliance.cli import note
        note("no specification could be fitted: no figures written")
        return
    factors = list(mv.factors) + ["method", "model", "test", "bias"]
    fig = sc.specification_curve(mv.results, factors, level=mv.config.level)
    ax = sc.multiverse_histogram(mv.results)
    for ext in ("pdf", "png"):
        save_figure(fig, folder / f"specification_curve.{ext}", dpi=300)
        save_figure(ax.figure, folder / f"multiverse_histogram.{ext}", dpi=300)


def text_summary(s: dict, out=None) -> str:
    sc = s["scale"]
    lines = [f"Multiverse: {s['n_specifications']} specifications "
             f"({s['n_subsets']} data subsets; {s['n_failed']} could not be fitted)"]
    if s["n_specifications"]:
        lines += [
            f"median {sc} = {s['median']:.3f} (5th-95th percentile {s['p5']:.3f} to "
            f"{s['p95']:.3f}; range {s['min']:.3f} to {s['max']:.3f})",
            f"CI above zero: {100 * s['share_ci_above_zero']:.1f}% of specifications",
            f"factor moving the estimate most: {s['factor_moving_most']}",
            "variance of the estimates between levels (eta^2): " + ", ".join(
                f"{f} {v:.2f}" for f, v in list(s["variance_decomposition"].items())[:6]),
        ]
    for fac, d in s.get("unavailable", {}).items():
        for lev, why in d.items():
            lines.append(f"unavailable: {fac} = {lev} ({why})")
    if s.get("missing_factors"):
        lines.append("factors not in the data: " + ", ".join(s["missing_factors"]))
    b = s.get("bootstrap")
    if b:
        lines.append(f"bootstrap under the null ({b['replicates']} replicates, seed "
                     f"{b['seed']}): p(median) = {b['p_median']:.4f}, p(share significant) "
                     f"= {b['p_share_significant']:.4f}")
    if out:
        lines.append(f"written to {out}")
    return "\n".join(lines)
