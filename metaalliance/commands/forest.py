"""metaalliance forest: a journal-ready forest plot of the selected findings."""

HELP = "forest plot (PDF, SVG, EPS, PNG, TIFF) of a random-effects or three-level model"
EPILOG = """\
Examples:
  metaalliance forest --out forest.pdf                        curated data, REML, sorted by estimate
  metaalliance forest --out forest.png --dpi 300 --width-mm 84 --columns n ci
  metaalliance forest --out by_rater.pdf --by rater           one block and diamond per rater
  metaalliance forest --out three_level.svg --cluster sample  three-level model (finding in sample)
  metaalliance forest --data my.csv --r r --n n --out mine.tiff

Columns (--columns, left of the plot unless numeric): any data column such as instrument,
rater, timing, outcome_measure, n, year; weight (percent) and ci (r [95% CI]) go right of it.
Findings of one study stay together under the study's label. A figure taller than a journal
page is split into pages (--pages auto): one multi-page PDF, or FILE-p1.png, FILE-p2.png ...
Fonts are embedded (TrueType); the r axis has its ticks at atanh(r), the model is on Fisher z."""

#: what a figure shows by default, in order
DEFAULT_COLUMNS = ("instrument", "rater", "n", "weight", "ci")


def add_figure_options(p, width_mm: float) -> None:
    """--out, --width-mm, --dpi, --font-size, --title (shared with funnel)."""
    g = p.add_argument_group("figure")
    g.add_argument("--out", required=True, metavar="FILE",
                   help="output file; the suffix sets the format: .pdf .svg .eps .png .tiff")
    g.add_argument("--width-mm", type=float, default=width_mm, metavar="MM",
                   help=f"figure width in mm: 84 single column, 129 one and a half, 174 double "
                        f"(default {width_mm:g})")
    g.add_argument("--dpi", type=int, default=600, help="resolution of PNG/TIFF (default 600)")
    g.add_argument("--font-size", type=float, default=7.0, metavar="PT",
                   help="text size in pt at print size (default 7)")
    g.add_argument("--title", help="a title above the figure (journals usually want none)")


def register(sub, common):
    import argparse

    from metaalliance.cli import add_model_options
    from metaalliance.options import TAU2_MODELS

    p = sub.add_parser("forest", help=HELP, description=HELP, epilog=EPILOG,
                       parents=[common["dataset"], common["selection"]],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_figure_options(p, 174.0)
    add_model_options(p)
    g = p.add_argument_group("layout")
    g.add_argument("--by", metavar="FIELD", help="subgroup blocks by this column, each with its "
                   "own diamond, and the test of subgroup differences")
    g.add_argument("--tau2-model", default="separate", choices=list(TAU2_MODELS),
                   help="with --by: a tau^2 per subgroup (separate) or a common one (pooled)")
    g.add_argument("--cluster", metavar="COL", help="three-level model: findings within "
                   "clusters of this column (e.g. sample or citekey)")
    g.add_argument("--sort", choices=("estimate", "year", "label", "none"), default="estimate",
                   help="row order (default estimate); findings of a study stay together")
    g.add_argument("--columns", nargs="+", metavar="COL",
                   help=f"columns to show (default: {' '.join(DEFAULT_COLUMNS)}; "
                        "commas work too)")
    g.add_argument("--no-pi", action="store_true", help="leave out the prediction interval")
    g.add_argument("--xlim", nargs=2, type=float, metavar=("LO", "HI"),
                   help="axis limits on the r scale (CIs beyond get arrows)")
    g.add_argument("--pages", choices=("auto", "single"), default="auto",
                   help="auto: split a figure taller than a page; single: one tall figure")
    p.set_defaults(run=run)


def drop_missing(sel, columns):
    """Rows of a Selection without a value in ``columns`` are left out, with a warning."""
    import warnings

    import numpy as np

    from metaalliance.errors import MetaAllianceWarning

    df = sel.frame.reset_index(drop=True)
    missing = np.zeros(len(df), dtype=bool)
    for col in columns:
        values = df[col]
        missing |= values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
    if not missing.any():
        return df, np.asarray(sel.yi, float), np.asarray(sel.vi, float), list(sel.labels)
    warnings.warn(f"omitted {int(missing.sum())} row(s) with a missing value in "
                  f"{', '.join(columns)}", MetaAllianceWarning)
    keep = ~missing
    return (df[keep].reset_index(drop=True), np.asarray(sel.yi, float)[keep],
            np.asarray(sel.vi, float)[keep], [lb for lb, k in zip(sel.labels, keep) if k])


def parse_columns(values):
    if not values:
        return list(DEFAULT_COLUMNS)
    return [c.strip() for v in values for c in v.split(",") if c.strip()]


def check_out(path):
    """The output path: a known suffix, an existing folder."""
    from pathlib import Path

    from metaalliance.errors import OptionError
    from metaalliance.figures.plots import FORMATS

    out = Path(path)
    suffix = out.suffix.lower().lstrip(".")
    if suffix == "tif":
        suffix = "tiff"
    if suffix not in FORMATS:
        raise OptionError(f"--out {path}: the suffix must be one of "
                          f"{', '.join('.' + f for f in FORMATS)}")
    if not out.parent.is_dir():
        raise OptionError(f"--out {path}: folder {out.parent} does not exist")
    return out


def run(args) -> int:
    from metaalliance.engine import models
    from metaalliance.figures import plots
    from metaalliance.cli import select
    from metaalliance.errors import OptionError

    out = check_out(args.out)
    if args.by and args.cluster:
        raise OptionError("--by cannot be combined with --cluster")
    used = [c for c in (args.by, args.cluster) if c]
    sel = select(args, required_columns=tuple(used))
    df, yi, vi, labels = drop_missing(sel, used)
    if "label" not in df.columns:
        df = df.assign(label=labels)
    opts = dict(method=args.method, test=args.test, level=args.level, labels=labels,
                measure=sel.measure)
    subgroups = None
    if args.cluster:
        if args.method not in ("REML", "ML"):
            raise OptionError(f"--cluster: the three-level model is fitted by REML or ML, "
                              f"not {args.method}")
        # rma.mv's t test (df k - 1) is the three-level counterpart of knha
        fit = models.three_level(yi, vi, df[args.cluster].astype(str).to_numpy(),
                                 method=args.method, test="t" if args.test == "knha" else "z",
                                 level=args.level, labels=labels, measure=sel.measure)
    else:
        # --control concerns rma.uni's tau^2 iterations (rma.mv above has its own optimiser)
        fit = models.random_effects(yi, vi, control=args.control, **opts)
        if args.by:
            subgroups = models.subgroups(yi, vi, df[args.by].to_numpy(), by=args.by,
                                         tau2_model=args.tau2_model, control=args.control,
                                         **opts)
    kwargs = dict(data=df, subgroups=subgroups, columns=parse_columns(args.columns),
                  sort=None if args.sort == "none" else args.sort,
                  group_by=args.cluster or "citekey", show_pi=not args.no_pi,
                  width=args.width_mm, font_size=args.font_size, title=args.title,
                  xlim=tuple(args.xlim) if args.xlim else None)
    if args.pages == "auto":
        figures = plots.forest_figures(fit, **kwargs)
    else:
        figures = [plots.forest_plot(fit, **kwargs).figure]
    for path in plots.save_figure(figures, out, dpi=args.dpi):
        print(path)
    return 0
