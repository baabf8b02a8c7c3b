"""metaalliance agree: two reviewers' extractions of the same studies, compared."""

HELP = "compare two reviewers' extractions (sheets or findings folders): kappa, ICC, discrepancies"
EPILOG = """\
  metaalliance agree reviewer_a.xlsx reviewer_b.xlsx
  metaalliance agree a/findings b/findings --json
  metaalliance agree a.xlsx b.csv --mapping team.toml --tol-r 0.01

Findings are matched on (citekey, id). For every vocabulary field (and the statistic type and
positive_is_better): percent agreement and Cohen's kappa (statsmodels' cohens_kappa; null when
both reviewers used a single code throughout). For numbers (n, value, df, n1, n2, session and r,
the sign-aligned correlation each row converts to): agreement within a tolerance (--tol-r for r,
exact for the others unless --tol) and the largest difference. icc_r is ICC(2,1) of the converted
r (two-way random, absolute agreement, single rater; Shrout & Fleiss 1979). Free-text fields
(locator, note, outcome_measure ...) are not compared.

--json: {"matched", "only_in_a", "only_in_b", "fields": {FIELD: {"kappa", "agreement", "n", ...}},
"icc_r", "discrepancies": [{"citekey", "id", "field", "a", "b"}]}. Exit 1 when the two have no
finding in common."""


def register(sub, common):
    import argparse
    p = sub.add_parser("agree", help=HELP, description=HELP, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", metavar="A", help="reviewer A: a sheet (.xlsx, .ods, .csv) or a findings "
                                          "folder (with references.bib beside it)")
    p.add_argument("b", metavar="B", help="reviewer B, the same kind")
    p.add_argument("--mapping", metavar="MAP.toml", help="rename sheet columns and spellings")
    p.add_argument("--tol-r", type=float, default=0.005,
                   help="r values closer than this agree (default 0.005)")
    p.add_argument("--tol", type=float, default=0.0,
                   help="other numbers closer than this agree (default 0: exactly)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    import math
    from pathlib import Path

    from metaalliance.analyses.agreement import compare
    from metaalliance.cli import print_json
    from metaalliance.dataset import intake
    from metaalliance.dataset.findings import display_path
    from metaalliance.errors import DataError, OptionError

    for name, tol in (("--tol-r", args.tol_r), ("--tol", args.tol)):
        if not math.isfinite(tol) or tol < 0:
            raise OptionError(f"{name}: {tol} must be a number >= 0")
    mapping = intake.read_mapping(args.mapping) if args.mapping else intake.NO_MAPPING
    sides = []
    for path in (args.a, args.b):
        if not Path(path).exists():
            raise DataError(f"{display_path(path)}: file not found")
        recs = intake.records_of(path, mapping)
        missing = [row for row, r in recs if r.get("id") is None or r.get("citekey") is None]
        if missing:
            raise DataError(f"{display_path(path)}: row {missing[0]}: id: missing (agree matches "
                            "findings on citekey and id; give every row both)")
        sides.append([r for _, r in recs])
    res = compare(sides[0], sides[1], tol_r=args.tol_r, tol_number=args.tol)
    if res["matched"] == 0:
        raise DataError(f"{display_path(args.a)}, {display_path(args.b)}: no finding in common "
                        "(findings are matched on citekey and id)")
    if args.json:
        print_json(res)
        return 0
    print(f"matched findings: {res['matched']}; only in A: {len(res['only_in_a'])}; "
          f"only in B: {len(res['only_in_b'])}")
    for which in ("only_in_a", "only_in_b"):
        for d in res[which]:
            print(f"  {which.replace('_', ' ')}: {d['citekey']} {d['id']}")
    print(f"{'field':22} {'n':>4} {'agreement':>9} {'kappa':>7} {'max diff':>9}")
    for field, e in res["fields"].items():
        kap = "" if e.get("kappa") is None else f"{e['kappa']:.3f}"
        diff = "" if e.get("max_difference") is None else f"{e['max_difference']:.4g}"
        print(f"{field:22} {e['n']:>4} {100 * e['agreement']:>8.1f}% {kap:>7} {diff:>9}")
    icc = "n/a (fewer than 2 matched findings with an r)" if res["icc_r"] is None \
        else f"{res['icc_r']:.4f}"
    print(f"ICC(2,1) of r: {icc}")
    if res["discrepancies"]:
        print(f"discrepancies to reconcile ({len(res['discrepancies'])}):")
        for d in res["discrepancies"]:
            print(f"  {d['citekey']} {d['id']} {d['field']}: A {d['a']!r}  B {d['b']!r}")
    else:
        print("no discrepancies")
    return 0
