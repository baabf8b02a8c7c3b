"""metaalliance diff: the curated dataset at two git revisions, and what the change does."""

HELP = "compare the dataset at git revision REV with REV2 (default: the working tree)"
EPILOG = """\
  metaalliance diff HEAD                  uncommitted changes to data/findings and references.bib
  metaalliance diff v1.0 v1.1 --json      two releases
  git log --oneline -- data/findings      the revisions that changed the dataset

Lists studies and findings added and removed, every changed field (citekey, id, field, old, new;
fields named as the sheet columns; a study field once per study, with id null), and the main pooled estimate at both (three-level REML on
Fisher z, findings within samples, adherence/retention/dropout apart; r, CI, PI, tau^2), so a
reviewer sees what a change does to the result before it lands. The dataset at a revision is
read by today's rules; when it does not validate, its pooled estimate is null (with a warning).

--json: {"old", "new", "added", "removed", "changed": [{"citekey", "id", "field", "old", "new"}],
"studies_added", "studies_removed", "pooled": {"old": {...}, "new": {...}}}"""


def register(sub, common):
    import argparse
    p = sub.add_parser("diff", help=HELP, description=HELP, epilog=EPILOG,
                       parents=[common["dataset"]],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rev", metavar="REV", help="git revision (commit, tag, branch, HEAD~2 ...)")
    p.add_argument("rev2", metavar="REV2", nargs="?",
                   help="second revision (default: the working tree, or --findings/--bib)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    import contextlib
    import warnings

    from metaalliance.cli import print_json
    from metaalliance.analyses.headline import main_estimate
    from metaalliance.dataset import findings, history
    from metaalliance.errors import MetaAllianceWarning

    with contextlib.ExitStack() as stack:
        old_dir, old_bib = stack.enter_context(history.at_revision(args.rev))
        old = history.snapshot(old_dir, old_bib, args.rev)
        if args.rev2:
            new_dir, new_bib = stack.enter_context(history.at_revision(args.rev2))
            label = args.rev2
        else:
            new_dir, new_bib = findings._resolve(args.findings, args.bib)
            label = "working tree"
        new = history.snapshot(new_dir, new_bib, label)
    for snap in (old, new):
        if snap.problems:
            warnings.warn(f"the dataset at {snap.label} does not validate with this version "
                          f"({len(snap.problems)} problem(s), first: {snap.problems[0]}); its "
                          "pooled estimate is not computed", MetaAllianceWarning)
    res = {"old": args.rev, "new": label, **history.compare(old, new),
           "pooled": {"old": main_estimate(old.frame),
                      "new": main_estimate(new.frame)}}
    if args.json:
        print_json(res)
        return 0
    print(f"dataset {args.rev} -> {label}")
    for key, word in (("studies_added", "study added"), ("studies_removed", "study removed")):
        for ck in res[key]:
            print(f"  {word}: {ck}")
    for key, sign in (("added", "+"), ("removed", "-")):
        for d in res[key]:
            print(f"  {sign} finding {d['citekey']} {d['id']}")
    for c in res["changed"]:
        where = f"{c['citekey']} {c['id']}" if c["id"] else f"{c['citekey']} (study)"
        print(f"  ~ {where} {c['field']}: {c['old']!r} -> {c['new']!r}")
    if not (res["added"] or res["removed"] or res["changed"]):
        print("  no finding changed")
    for when, rev in (("old", args.rev), ("new", label)):
        p = res["pooled"][when]
        if p is None:
            print(f"pooled r at {rev}: n/a")
        else:
            print(f"pooled r at {rev}: {p['r']:.3f} [{p['ci_lower']:.3f}, {p['ci_upper']:.3f}], "
                  f"PI [{p['pi_lower']:.3f}, {p['pi_upper']:.3f}], k = {p['k']}, "
                  f"tau^2 = {p['tau2']:.4f}")
    return 0
