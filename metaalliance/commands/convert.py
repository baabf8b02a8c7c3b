"""metaalliance convert: r, Fisher z and its variance from a reported statistic."""

HELP = "convert a reported statistic (t, F, d, chi2, OR, z, r) to r, z and vi"
EPILOG = """\
Examples:
  metaalliance convert --stat t --value 2.4 --df 48
  metaalliance convert --stat F --value 6.1 --df 58 --sign -1 --n 60
  metaalliance convert --stat d --value 0.5 --n1 30 --n2 30

r is in the paper's own sign convention (use --flip when a positive value means a worse
outcome). z = atanh(r); vi = 1/(n - 3) is printed when n is known (--n, or n1 + n2 for d/OR)."""


def register(sub, common):
    import argparse
    from metaalliance.options import STATISTICS
    p = sub.add_parser("convert", help=HELP, description=HELP, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stat", required=True, choices=list(STATISTICS), help="reported statistic")
    p.add_argument("--value", required=True, type=float, help="its value")
    p.add_argument("--df", type=float, help="denominator df (t, F)")
    p.add_argument("--sign", type=int, choices=(1, -1), help="direction for unsigned F / chi2")
    p.add_argument("--n", type=int, help="total sample size (needed for chi2 and z; gives vi)")
    p.add_argument("--n1", type=int, help="group 1 size (d, or)")
    p.add_argument("--n2", type=int, help="group 2 size (d, or)")
    p.add_argument("--flip", action="store_true", help="reverse the sign (align to + = better)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    import math

    from metaalliance.cli import print_json
    from metaalliance.dataset.effectsize import convert
    from metaalliance.errors import DataError
    if not math.isfinite(args.value):
        raise DataError("--value: must be a finite number")
    r = convert(args.stat, args.value, n=args.n, df=args.df, n1=args.n1, n2=args.n2,
                sign=args.sign)
    if args.flip:
        r = -r
    if not -1 < r < 1:
        raise DataError(f"the statistic converts to r = {r:g}; |r| must be < 1")
    n = args.n if args.n is not None else (
        args.n1 + args.n2 if args.n1 is not None and args.n2 is not None else None)
    if n is not None and n <= 3:
        raise DataError(f"--n: {n} must be > 3 (the variance 1/(n-3) needs n >= 4)")
    out = {"stat": args.stat, "value": args.value, "r": r, "z": math.atanh(r),
           "vi": 1.0 / (n - 3) if n is not None else None, "n": n}
    if args.json:
        print_json(out)
    else:
        print(f"r  = {r:.6f}")
        print(f"z  = {out['z']:.6f}")
        print(f"vi = {out['vi']:.6f}" if n is not None else "vi = (give --n for 1/(n-3))")
    return 0
