"""metaalliance export: the findings for other software (a thin dispatcher): a team sheet
(``--sheet``, logic in dataset/intake_write.py) and the R bridge (``--r``, dataset/rbridge.py)."""

HELP = ("export the findings: --sheet FILE (a sheet `add --file` imports back unchanged) or "
        "--r DIR (CSV + an R/metafor script that reproduces our numbers)")
EPILOG = """\
  metaalliance export --sheet all.xlsx     every curated finding a row, the template's columns,
                                           drop-down lists and the 'columns' sheet (.xlsx, .ods or .csv)
  metaalliance export --r bridge/                      curated data: rma + three-level rma.mv on
                                                       samples, moderators, bias tests, forest plot
  metaalliance export --r bridge/ --where rater=client --mods "~ instrument"
  metaalliance export --r bridge/ --data my.csv --r-col r --n n   (a CSV: --r-col, not --r)
  cd bridge && Rscript reproduce.R                     metafor's numbers beside ours

Importing the exported sheet into an empty folder gives the same study files:
  metaalliance add --file all.xlsx --findings new/findings --bib new/references.bib \\
      --bibtex references.bib

The R folder gets findings.csv, reproduce.R (commented) and metaalliance.json (our numbers);
the script ends with a table of each number beside ours and their relative difference."""


def register(sub, common):
    import argparse

    from metaalliance.cli import _selection_parent, add_model_options

    # a fresh copy of the selection flags: resolving the --r conflict below edits the parent's
    # actions, which the other commands share
    p = sub.add_parser("export", help=HELP, description=HELP, epilog=EPILOG,
                       parents=[common["dataset"], _selection_parent()],
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       conflict_handler="resolve")
    s = p.add_argument_group("team sheet")
    s.add_argument("--sheet", metavar="FILE",
                   help="write every curated finding to this .xlsx/.ods/.csv")
    g = p.add_argument_group("R bridge")
    # --r is the R folder here; the selection's CSV column flag --r COL becomes --r-col COL
    g.add_argument("--r", metavar="DIR", dest="r_dir",
                   help="write findings.csv, reproduce.R and metaalliance.json into DIR")
    g.add_argument("--r-col", metavar="COL", dest="r_col",
                   help="with --data: the CSV column holding correlations (--r elsewhere)")
    m = add_model_options(p)
    m.add_argument("--cluster", metavar="COL",
                   help="three-level model on this column (default on the curated data: sample)")
    m.add_argument("--mods", metavar="FORMULA", action="append",
                   help='a moderator model, e.g. "~ rater" (repeatable; default on the curated '
                        'data: ~ rater, ~ instrument, ~ year where the selection supports them)')
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    from metaalliance.cli import check_output_path, print_json
    from metaalliance.errors import OptionError

    done = {}
    if getattr(args, "sheet", None):
        from metaalliance.dataset.intake_write import export_sheet

        check_output_path(_Out(args, args.sheet))
        done["sheet"] = {"file": args.sheet,
                         "findings": export_sheet(args.sheet, args.findings, args.bib)}
    if getattr(args, "r_dir", None):
        from metaalliance.cli import select
        from metaalliance.dataset.rbridge import export_r

        check_output_path(_Out(args, args.r_dir))
        selection = " ".join(f"--where {w}" for w in args.where)
        done["r"] = export_r(select(args), args.r_dir, method=args.method, test=args.test,
                             level=args.level, control=args.control, cluster=args.cluster,
                             mods=args.mods, selection_text=selection)
    if not done:
        raise OptionError("export needs a target: --sheet FILE or --r DIR "
                          "(see metaalliance export --help)")
    if args.json:
        print_json(done)
        return 0
    if "sheet" in done:
        print(f"wrote {done['sheet']['file']}: {done['sheet']['findings']} finding(s)")
    r = done.get("r")
    if r:
        print(f"wrote {', '.join(r['files'])}: {r['k']} finding(s), {r['values']} numbers "
              f"to compare; run: cd {r['folder']} && Rscript reproduce.R")
        for s in r["skipped"]:
            print(f"note: moderator model {s['formula']} left out: {s['reason']}")
    return 0


class _Out:
    """``args`` with ``out`` set to the export target, for cli.check_output_path."""

    def __init__(self, args, out):
        self.__dict__.update(vars(args))
        self.out = out
