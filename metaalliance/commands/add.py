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
  metaalliance add --file new.csv      one finding a row; columns named as these flags
                                       with underscores (stat_type, outcome_domain, ...)

The whole dataset is validated as it would be after the add; on any problem nothing is written
and every problem is listed. Writes are atomic and locked: an interrupted or concurrent add
never corrupts or loses a finding. --dry-run shows what would be written."""


def register(sub, common):
    import argparse
    from metaalliance.options import STATISTICS, VOCABULARIES
    p = sub.add_parser("add", help=HELP, description=HELP, epilog=EPILOG,
                       parents=[common["dataset"]],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", help="a YAML or CSV file of findings to add")
    p.add_argument("--bibtex", metavar="FILE", help="file holding the new study's BibTeX entry")
    p.add_argument("--dry-run", action="store_true", help="validate and show, write nothing")
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
    verb = "would add" if args.dry_run else "added"
    for a in added:
        print(f"{verb} finding {a.finding_id} to {a.file}" + (" (new study)" if a.new_study else ""))
    return 0
