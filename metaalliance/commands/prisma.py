"""metaalliance prisma: the PRISMA 2020 flow diagram of the curated dataset."""

HELP = "PRISMA 2020 flow diagram: studies identified, read, excluded, awaiting, included"
EPILOG = """\
Examples:
  metaalliance prisma --out prisma.pdf
  metaalliance prisma --out prisma.png --dpi 300 --width-mm 129
  metaalliance prisma --json                       the counts only

Every number is counted from the files: data/findings (included studies and findings),
data/awaiting.csv (studies awaiting extraction, by what is missing) and data/excluded.csv
(exclusions, grouped by their category). A record is one study; see data/README.md
("Studies awaiting extraction and the PRISMA flow") for how each is counted."""


def register(sub, common):
    import argparse

    p = sub.add_parser("prisma", help=HELP, description=HELP, epilog=EPILOG,
                       parents=[common["dataset"]],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("figure")
    g.add_argument("--out", metavar="FILE",
                   help="output file; the suffix sets the format: .pdf .svg .eps .png .tiff")
    g.add_argument("--width-mm", type=float, default=174.0, metavar="MM",
                   help="figure width in mm: 129 one and a half column, 174 double (default)")
    g.add_argument("--dpi", type=int, default=600, help="resolution of PNG/TIFF (default 600)")
    g.add_argument("--font-size", type=float, default=7.0, metavar="PT",
                   help="text size in pt at print size (default 7)")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    from metaalliance.cli import print_json
    from metaalliance.dataset import flow
    from metaalliance.errors import OptionError

    if not args.out and not args.json:
        raise OptionError("prisma: give --out FILE (the figure) or --json (the counts)")
    counts = flow.counts(args.findings, args.bib)
    if args.out:
        from metaalliance.figures import plots, prisma
        from .forest import check_out

        out = check_out(args.out)
        fig = prisma.prisma_figure(counts, width=args.width_mm, font_size=args.font_size)
        written = plots.save_figure(fig, out, dpi=args.dpi,
                                    metadata_title="PRISMA 2020 flow diagram")
        if not args.json:
            for path in written:
                print(path)
    if args.json:
        print_json(counts.as_dict())
    return 0
