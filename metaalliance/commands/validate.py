"""metaalliance validate: check the curated dataset, one line per problem."""

HELP = "check data/findings and references.bib; one line per problem"
EPILOG = """\
Exit status: 0 when the dataset is clean, 1 with one line per problem, each naming the file,
the finding and the field, e.g.
  data/findings/webb2011two.yaml: finding f2: n: must be >= 4
All problems are reported at once."""


def register(sub, common):
    import argparse
    p = sub.add_parser("validate", help=HELP, description=HELP, epilog=EPILOG,
                       parents=[common["dataset"]],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=run)


def run(args) -> int:
    import sys

    from metaalliance.dataset.findings import read_dataset
    ds = read_dataset(args.findings, args.bib)
    for line in ds.problems:
        print(line)
    if ds.problems:
        print(f"{len(ds.problems)} problem(s)", file=sys.stderr)
        return 1
    n = sum(len(doc["findings"]) for _, doc in ds.studies.values())
    print(f"ok: {len(ds.studies)} studies, {n} findings", file=sys.stderr)
    return 0
