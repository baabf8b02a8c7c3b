"""metaalliance summary: counts of studies and findings by each tag."""

HELP = "counts of studies and findings by each tag of the curated dataset"

#: the tags summarised, in order
TAGS = ("population", "diagnosis", "setting", "modality", "treatment", "design", "instrument",
        "rater", "timing", "outcome_domain", "effect_type", "conversion", "stat_type",
        "read_in_review")


def register(sub, common):
    p = sub.add_parser("summary", help=HELP, description=HELP,
                       parents=[common["dataset"]])
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def counts(df):
    """{tag: [{level, studies, findings}, ...]} sorted by findings, then level."""
    out = {}
    for tag in TAGS:
        g = df.groupby(tag, dropna=False)
        rows = [{"level": str(level).lower() if isinstance(level, bool) else str(level),
                 "studies": int(sub["citekey"].nunique()),
                 "findings": int(len(sub))} for level, sub in g]
        out[tag] = sorted(rows, key=lambda d: (-d["findings"], d["level"]))
    return out


def run(args) -> int:
    from metaalliance.cli import print_json
    from metaalliance.dataset.findings import load
    df = load(args.findings, args.bib)
    per_sample = df.groupby("sample")["n"].max()
    total = {"studies": int(df["citekey"].nunique()), "samples": int(df["sample"].nunique()),
             "findings": int(len(df)), "patients": int(per_sample.sum()),
             "years": [int(df["year"].min()), int(df["year"].max())] if len(df) else []}
    table = counts(df)
    from metaalliance.dataset import flow
    frontier = flow.counts(args.findings, args.bib)
    if args.json:
        print_json({"total": total, "by": table, "coverage": frontier.as_dict()})
        return 0
    print(f"{total['studies']} studies, {total['samples']} independent samples, "
          f"{total['findings']} findings, {total['patients']} patients "
          f"(largest n per sample), published {total['years'][0]}-{total['years'][1]}")
    print(flow.coverage_sentence(frontier))
    for tag, rows in table.items():
        print(f"\n{tag}")
        width = max(len(r["level"]) for r in rows)
        print(f"  {'level':<{width}}  studies  findings")
        for r in rows:
            print(f"  {r['level']:<{width}}  {r['studies']:>7}  {r['findings']:>8}")
    return 0
