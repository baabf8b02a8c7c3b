"""Largest relative difference between metaalliance and metafor, per quantity.

Run from the repository root: ``.venv/bin/python tests/reference/univariate_diffs.py``.
Reads univariate.json (no R needed) and prints one table of control="optimum" against metafor
run to its optimum ("tight": threshold 1e-10, tol 1e-12) and one of control="metafor" (the
default) against metafor's plain calls (its default control). The relative difference is
|ours - metafor| / |metafor| (absolute when metafor's value is 0); EE substitutions are those
documented in tests/test_reference_univariate.py.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import test_reference_univariate as t  # noqa: E402


#: below this |metafor value| a quantity is "zero" (tau2 at the boundary, I^2 = 0 ...): its
#: difference is reported as absolute, not relative
ZERO = 1e-8


def collect(entries, ours_fn, ref_fn, group, control=t.TIGHT):
    """{(group, quantity): [max relative diff, where, max absolute diff at ~0, where]}"""
    worst = {}
    for e in entries:
        _, ours = ours_fn(e, control)
        ref = ref_fn(e)
        for key, r in ref.items():
            if r is None:
                continue
            q = key.split(".")[-1]
            where = t._id(e) + (f" [{key}]" if "." in key else "")
            w = worst.setdefault((group, q), [0.0, "", None, ""])
            o = ours.get(key)
            if abs(r) >= (100 * ZERO if q == "i2" else ZERO):     # I^2 is in percent
                d = t.rel_diff(o, r)
                if d > w[0] or not w[1]:
                    w[0], w[1] = d, where
            else:
                d = abs(o - r)
                if w[2] is None or d > w[2]:
                    w[2], w[3] = d, where
    return worst


def table(title, worst):
    print(f"\n{title}")
    print(f"{'group':<12}{'quantity':<17}{'max rel diff':>13}  {'abs diff at 0':>13}  worst case")
    for (group, q), (d, where, a, where0) in sorted(worst.items()):
        a_txt = "" if a is None else f"{a:.1e}"
        print(f"{group:<12}{q:<17}{d:>13.1e}  {a_txt:>13}  {where}"
              + (f"; at 0: {where0}" if a is not None else ""))


def main():
    tight = {}
    tight.update(collect(t.REF["fits"], t.ours_fit, t.ref_fit, "rma"))
    tight.update(collect(t.REF["metareg"], t.ours_reg, t.ref_reg, "rma mods"))
    tight.update(collect(t.REF["subgroups"], t.ours_sub, t.ref_sub, "subgroups"))
    table('control="optimum" against metafor run to the optimum (threshold 1e-10, tol 1e-12)',
          tight)
    D = t.DEFAULT
    default = {}
    default.update(collect(t.REF["fits_default"], t.ours_fit,
                           lambda e: t.ref_fit(e, t.REF["fits_default"]), "rma", D))
    default.update(collect(t.REF["metareg_default"], t.ours_reg, t.ref_reg, "rma mods", D))
    default.update(collect(t.REF["subgroups_default"], t.ours_sub, t.ref_sub, "subgroups", D))
    table('control="metafor" (default) against metafor\'s plain calls (default control: '
          'threshold 1e-5, uniroot tol eps^0.25)', default)
    overall = max(d for d, *_ in default.values())
    print(f"largest relative difference against metafor's defaults: {overall:.1e}")
    for name, entries, control in (("tight", t.PERM_EXACT, t.TIGHT),
                                   ("default", t.PERM_DEFAULT, D)):
        perm = []
        for e in entries:
            res = t._perm(e, permutations=2, exact=True, control=control)
            ds = [abs(c.perm_pvalue - p)
                  for c, p in zip(res.coefficients, t._list(e["pvalues"]))]
            ds.append(abs(res.perm_qm_pvalue - e["qm_pvalue"]))
            perm.append(max(ds))
        print(f"exact permutest p-values, {name} control ({len(perm)} tests): "
              f"max abs. difference {max(perm):.2e}")


if __name__ == "__main__":
    main()
