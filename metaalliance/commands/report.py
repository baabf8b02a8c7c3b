"""metaalliance report: the whole analysis (tables, figures, HTML) in one folder."""

HELP = "the full analysis as a report folder: tables (CSV, Markdown), figures, HTML, manifest"
EPILOG = """\
Examples:
  metaalliance report                                     shipped analysis.toml -> results/
  metaalliance report --config analysis.toml --out results
  metaalliance report --config my.toml --out /tmp/report --quiet

The report holds the three-level pooled estimate (symptom-type outcomes; adherence, retention
and dropout pooled apart), every moderator the data support, a meta-regression on year,
sensitivity and publication-bias checks, forest and funnel plots (PDF + PNG), APA tables (CSV +
Markdown), a results paragraph, the comparison with published syntheses, report.html linking
all of it and manifest.json (data hash, versions, options, git commit). The folder is built
beside --out and renamed into place when complete; --out may not lie inside data/."""


def register(sub, common):
    import argparse

    p = sub.add_parser("report", help=HELP, description=HELP, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="TOML", default=None,
                   help="analysis options (default: analysis.toml in the current folder if "
                        "there is one, else the built-in defaults)")
    p.add_argument("--out", metavar="DIR", default="results",
                   help="report folder (default results/); replaced atomically")
    p.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    p.set_defaults(run=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    from metaalliance import report

    config = args.config
    if config is None and Path("analysis.toml").is_file():
        config = "analysis.toml"
    out = report.run(config, args.out, quiet=args.quiet, argv=["metaalliance", *sys.argv[1:]])
    print(out / "report.html")
    return 0
