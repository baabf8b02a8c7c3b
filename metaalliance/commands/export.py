"""metaalliance export: the curated dataset as a team sheet (a thin dispatcher; the logic is in
dataset/intake_write.py)."""

HELP = "export the curated dataset (a sheet that `add --file` imports back unchanged)"
EPILOG = """\
  metaalliance export --sheet all.xlsx     every finding a row, the template's columns, drop-down
                                           lists and the 'columns' sheet (.xlsx, .ods or .csv)

Importing the exported sheet into an empty folder gives the same study files:
  metaalliance add --file all.xlsx --findings new/findings --bib new/references.bib \\
      --bibtex references.bib"""


def register(sub, common):
    import argparse
    p = sub.add_parser("export", help=HELP, description=HELP, epilog=EPILOG,
                       parents=[common["dataset"]],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sheet", metavar="FILE", help="write the findings to this .xlsx/.ods/.csv")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    from metaalliance.cli import print_json
    from metaalliance.errors import OptionError

    done = {}
    if getattr(args, "sheet", None):
        from metaalliance.dataset.intake_write import export_sheet
        done["sheet"] = {"file": args.sheet,
                         "findings": export_sheet(args.sheet, args.findings, args.bib)}
    if not done:
        raise OptionError("export needs a target: --sheet FILE (see metaalliance export --help)")
    if args.json:
        print_json(done)
    else:
        for what, d in done.items():
            print(f"wrote {d['file']}: {d['findings']} finding(s)")
    return 0
