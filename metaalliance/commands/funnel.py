"""metaalliance funnel: a contour-enhanced funnel plot of the selected findings."""

HELP = "funnel plot (contour-enhanced; trim-and-fill studies with --trimfill)"
EPILOG = """\
Examples:
  metaalliance funnel --out funnel.pdf
  metaalliance funnel --out funnel.png --dpi 300 --trimfill
  metaalliance funnel --where rater=client --out client.svg --no-contours

Effect (r axis, ticks at atanh(r)) against its standard error, 0 at the top; the dashed
triangle is the 95% pseudo confidence region around the random-effects estimate; grey bands
around zero show where a finding would be significant at p < .10, .05 and .01. Findings are
treated as independent here, as in `metaalliance bias`. A finding beyond the r axis (|r| > .95)
is drawn at its edge as a triangle pointing outwards. The figure is --width-mm wide and as tall
as its legend needs."""


def register(sub, common):
    import argparse

    from metaalliance.cli import add_model_options
    from .forest import add_figure_options

    p = sub.add_parser("funnel", help=HELP, description=HELP, epilog=EPILOG,
                       parents=[common["dataset"], common["selection"]],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_figure_options(p, 84.0)
    add_model_options(p)
    g = p.add_argument_group("funnel")
    g.add_argument("--trimfill", action="store_true",
                   help="add the studies trim and fill (L0, side as metafor) imputes")
    g.add_argument("--no-contours", action="store_true",
                   help="leave out the regions of significance")
    p.set_defaults(run=run)


def run(args) -> int:
    from metaalliance.engine import models
    from metaalliance.figures import plots
    from metaalliance.cli import select
    from metaalliance.errors import ModelError
    from .forest import check_out

    out = check_out(args.out)
    sel = select(args)
    if len(sel.yi) < 2:
        raise ModelError(f"a funnel plot needs at least 2 findings (k = {len(sel.yi)})")
    fit = models.random_effects(sel.yi, sel.vi, method=args.method, test=args.test,
                                level=args.level, labels=list(sel.labels), measure=sel.measure,
                                control=args.control)
    trimfill = None
    if args.trimfill:
        from metaalliance.analyses import bias

        trimfill = bias.trim_and_fill(fit, control=args.control)
    ax = plots.funnel_plot(fit, trimfill=trimfill, contours=not args.no_contours,
                           width=args.width_mm, font_size=args.font_size, title=args.title)
    for path in plots.save_figure(ax.figure, out, dpi=args.dpi):
        print(path)
    return 0
