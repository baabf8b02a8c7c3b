"""metaalliance add: add a finding (flags, or a YAML/CSV file), validated before anything is written."""

HELP = "add findings to a study (or a new study), validated first, written atomically"
EPILOG = """\
From flags (an existing study needs only the finding's fields):
  metaalliance add --citekey webb2011two --n 105 --stat r --value -0.31 \\
      --positive-is-better false --instrument WAI --rater client --timing early --session 3 \\
      --outcome-measure BDI-II --outcome-domain symptoms --effect-type zero_order \\
      --conversion exact --locator "Table 2"

A new study also needs its fields (--population --diagnosis --setting --modality --treatment
--country --design --source) and its BibTeX entry (--bibtex FILE with one entry).

From a file:
  metaalliance add --file new.yaml     study-shaped YAML (as data/findings), optional `bibtex:`
  metaalliance add --file sheet.xlsx   a team's sheet (.xlsx, .ods or .csv): one finding a row,
                                       columns named as these flags with underscores
                                       (stat_type, outcome_domain, ...; study_note for --study-note,
                                       population_override ... for a finding's own tags)
  metaalliance add --template sheet.xlsx   an empty sheet with our columns, a drop-down list per
                                       vocabulary column and a sheet 'columns' explaining each
  metaalliance add --file team.xlsx --mapping map.toml   the team's own column names and spellings:
                                       [columns] "Study" = "citekey"
                                       [values.rater] pt = "client"

Every problem of every row of a sheet is listed at once, one line each, naming the row as the
spreadsheet shows it (header = row 1) and the column:
  sheet.xlsx: row 7: instrument: 'WAIX' is not a level (allowed: WAI, WAI-S, ...)
Formula cells, dates where a number belongs, merged cells, unknown or doubled columns are
problems too. The whole dataset is validated as it would be after the add; on any problem
nothing is written. Writes are atomic and locked: all rows are added in one transaction, and an
interrupted or concurrent add never corrupts or loses a finding. --dry-run shows what would be
added and the pooled estimate before and after. --json prints
{"added_studies": [...], "added_findings": N, "problems": [{"row", "field", "message"}]}."""


def register(sub, common):
    import argparse
    from metaalliance.options import STATISTICS, VOCABULARIES
    p = sub.add_parser("add", help=HELP, description=HELP, epilog=EPILOG,
                       parents=[common["dataset"]],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", metavar="FILE",
                   help="findings to add: a study YAML, or a sheet (.xlsx, .ods, .csv)")
    p.add_argument("--mapping", metavar="MAP.toml",
                   help="rename a sheet's columns and spellings to ours (see below)")
    p.add_argument("--template", metavar="SHEET.xlsx",
                   help="write an empty team sheet with validation lists, then stop")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.add_argument("--bibtex", metavar="FILE", help="file holding the new study's BibTeX entry")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and show what would be added (and the pooled estimate before "
                        "and after), write nothing")
    s = p.add_argument_group("study (new studies only, except --citekey)")
    s.add_argument("--citekey", help="the study's key, e.g. webb2011two")
    for key in ("population", "diagnosis", "setting", "modality", "treatment", "design"):
        s.add_argument(f"--{key}", choices=list(VOCABULARIES[key]))
    for key in ("country", "source", "read-at", "diagnosis-detail", "treatment-detail"):
        s.add_argument(f"--{key}")
    s.add_argument("--study-note", help="study-level note")
    f = p.add_argument_group("finding")
    f.add_argument("--id", help="finding id (default: next f<number>)")
    f.add_argument("--n", type=int, help="patients behind the estimate")
    f.add_argument("--stat", dest="stat_type", choices=list(STATISTICS), help="reported statistic")
    f.add_argument("--value", type=float, help="its value as reported")
    f.add_argument("--df", type=float, help="df (t, F)")
    f.add_argument("--sign", type=int, choices=(1, -1), help="direction of an unsigned F / chi2")
    f.add_argument("--n1", type=int)
    f.add_argument("--n2", type=int)
    f.add_argument("--positive-is-better", choices=("true", "false"),
                   help="does a positive association (paper's coding) mean better outcome?")
    f.add_argument("--instrument", choices=list(VOCABULARIES["instrument"]))
    f.add_argument("--instrument-detail")
    f.add_argument("--rater", choices=list(VOCABULARIES["rater"]))
    f.add_argument("--timing", choices=list(VOCABULARIES["timing"]))
    f.add_argument("--session", type=int)
    f.add_argument("--outcome-measure")
    f.add_argument("--outcome-domain", choices=list(VOCABULARIES["outcome_domain"]))
    f.add_argument("--effect-type", choices=list(VOCABULARIES["effect_type"]))
    f.add_argument("--conversion", choices=list(VOCABULARIES["conversion"]))
    f.add_argument("--locator", help="page, table or section where the numbers stand")
    f.add_argument("--sample", help="independent-sample id (default: the citekey)")
    f.add_argument("--curation-id")
    f.add_argument("--note")
    p.set_defaults(run=run)


SHEETS = (".csv", ".xlsx", ".ods")

FLAG_FIELDS = ("citekey", "population", "diagnosis", "setting", "modality", "treatment", "design",
               "country", "source", "read_at", "diagnosis_detail", "treatment_detail", "id", "n",
               "stat_type", "value", "df", "sign", "n1", "n2", "positive_is_better",
               "instrument", "instrument_detail", "rater", "timing", "session",
               "outcome_measure", "outcome_domain", "effect_type", "conversion", "locator",
               "sample", "curation_id", "note")


def run(args) -> int:
    from pathlib import Path

    from metaalliance.dataset.curate import add_findings, split_flat, studies_from_file
    from metaalliance.errors import DataError, OptionError
    given = {k: getattr(args, k) for k in FLAG_FIELDS if getattr(args, k) is not None}
    if args.study_note is not None:
        given["note_study"] = args.study_note
    bibtex = None
    if args.bibtex:
        path = Path(args.bibtex)
        if not path.is_file():
            raise DataError(f"{args.bibtex}: file not found")
        bibtex = path.read_text(encoding="utf-8")
    if args.template:
        if args.file or given:
            raise OptionError("--template writes an empty sheet; give it alone")
        from metaalliance.dataset.intake_write import write_template
        write_template(args.template)
        if args.json:
            from metaalliance.cli import print_json
            print_json({"template": args.template})
        else:
            print(f"wrote {args.template}: fill one finding per row, then "
                  f"metaalliance add --file {args.template}")
        return 0
    if args.mapping and not (args.file and Path(args.file).suffix.lower() in SHEETS):
        raise OptionError("--mapping applies to a sheet: give --file SHEET (.xlsx, .ods, .csv)")
    if args.file and Path(args.file).suffix.lower() in SHEETS:
        if given:
            raise OptionError("--file and finding flags cannot be combined")
        return run_sheet(args, bibtex)
    if args.file:
        if given:
            raise OptionError("--file and finding flags cannot be combined")
        studies, file_bib = studies_from_file(args.file)
        bibtex = "\n\n".join(b for b in (file_bib, bibtex) if b) or None
    else:
        if "citekey" not in given:
            raise OptionError("add needs --citekey (or --file); see metaalliance add --help")
        study_note = given.pop("note_study", None)
        study, finding = split_flat(given)
        if study_note is not None:
            study["note"] = study_note
        studies = [{**study, "findings": [finding]}]
    added = add_findings(studies, bibtex, args.findings, args.bib, dry_run=args.dry_run)
    if args.json:
        from metaalliance.cli import print_json
        print_json({"added_studies": sorted({a.citekey for a in added if a.new_study}),
                    "added_findings": len(added), "problems": [], "dry_run": args.dry_run})
        return 0
    verb = "would add" if args.dry_run else "added"
    for a in added:
        print(f"{verb} finding {a.finding_id} to {a.file}" + (" (new study)" if a.new_study else ""))
    return 0


def problem_record(line: str) -> dict:
    """A problem line as JSON: {"row", "field", "message"} (row null for a study file line)."""
    import re

    m = re.match(r"^.*?: rows? (\d+)(?:-\d+)?: (?:columns? [A-Z]+(?:-[A-Z]+)?: )?"
                 r"(?:([A-Za-z0-9_.]+): )?(.*)$", line)
    if m:
        return {"row": int(m.group(1)), "field": m.group(2), "message": line}
    return {"row": None, "field": None, "message": line}


def run_sheet(args, bibtex) -> int:
    """add --file SHEET: every problem at once, or one all-or-nothing write."""
    import sys

    from metaalliance.cli import print_json
    from metaalliance.dataset import intake
    from metaalliance.errors import ValidationError

    mapping = intake.read_mapping(args.mapping) if args.mapping else intake.NO_MAPPING
    try:
        res = intake.import_sheet(args.file, mapping, bibtex, args.findings, args.bib,
                                  dry_run=args.dry_run)
    except ValidationError as exc:
        if args.json:
            print_json({"added_studies": [], "added_findings": 0,
                        "problems": [problem_record(p) for p in exc.problems]})
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1
    pooled = None
    if args.dry_run:
        from metaalliance.dataset import findings
        from metaalliance.analyses.headline import main_estimate
        from metaalliance.dataset.intake import dataset_after

        before = findings.read_dataset(args.findings, args.bib)
        pooled = {"before": main_estimate(findings.load(args.findings, args.bib))
                  if not before.problems and before.studies else None,
                  "after": main_estimate(dataset_after(res.files, args.findings, args.bib))}
    if args.json:
        out = {"added_studies": res.added_studies, "added_findings": res.added_findings,
               "problems": [], "dry_run": bool(args.dry_run)}
        if pooled is not None:
            out["pooled"] = pooled
        print_json(out)
        return 0
    verb = "would add" if args.dry_run else "added"
    studies = sorted({a.citekey for a in res.added})
    print(f"{verb} {res.added_findings} finding(s) in {len(studies)} stud(y/ies)"
          + (f", {len(res.added_studies)} new: {', '.join(res.added_studies)}"
             if res.added_studies else ""))
    for a in res.added:
        print(f"  {a.citekey} {a.finding_id} -> {a.file}")
    if pooled is not None:
        for when in ("before", "after"):
            p = pooled[when]
            if p is None:
                print(f"pooled r {when}: (fewer than 2 outcome findings)")
            else:
                print(f"pooled r {when}: {p['r']:.3f} [{p['ci_lower']:.3f}, {p['ci_upper']:.3f}]"
                      f", PI [{p['pi_lower']:.3f}, {p['pi_upper']:.3f}], k = {p['k']}, "
                      f"tau^2 = {p['tau2']:.4f}")
    return 0
