"""Print the largest relative difference from metafor per quantity of the bias and
sensitivity analyses (reads bias_sensitivity.json; no R).

Run: .venv/bin/python tests/reference/bias_sensitivity_diff.py

tau^2 values that metafor leaves a hair above a boundary optimum at 0 (|tau^2| < 1e-9 in
either program) are listed apart, as absolute differences of tau^2 and of I^2 (percent).
"""

import json
import warnings
from pathlib import Path

import numpy as np

BOUNDARY = 1e-9


def main():
    from metaalliance.analyses import bias
    from metaalliance.engine import models
    from metaalliance.analyses import sensitivity

    ref = json.loads((Path(__file__).parent / "bias_sensitivity.json").read_text())
    worst: dict[str, tuple[float, str]] = {}

    def note(q, ours, theirs, case, boundary_of=None):
        a = np.atleast_1d(np.asarray(ours, dtype=float)).ravel()
        b = np.atleast_1d(np.array([np.nan if x is None else x for x in np.atleast_1d(theirs)],
                                   dtype=float)).ravel()
        if a.size == 0 and b.size == 0:
            return
        tiny = np.zeros(b.size, dtype=bool)
        if boundary_of is not None:
            t_ours, t_theirs = (np.atleast_1d(np.asarray(x, dtype=float)) for x in boundary_of)
            tiny = (np.abs(t_ours) < BOUNDARY) | (np.abs(t_theirs) < BOUNDARY)
        if tiny.any():
            d = float(np.max(np.abs(a[tiny] - b[tiny])))
            key = q + " (tau^2 at 0: absolute)"
            if d >= worst.get(key, (-1.0, ""))[0]:
                worst[key] = (d, case)
        a, b = a[~tiny], b[~tiny]
        if a.size == 0:
            return
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(a == b, 0.0, np.abs(a - b) / np.abs(b))
        d = float(np.max(r))
        if d >= worst.get(q, (-1.0, ""))[0]:
            worst[q] = (d, case)

    fitcols = ("estimate", "se", "stat", "pvalue", "ci_lower", "ci_upper", "q", "q_pvalue",
               "tau2", "i2", "h2")
    for name, ds in ref["datasets"].items():
        for mname, m in ds["models"].items():
            case = f"{name} {mname}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = models.random_effects(ds["yi"], ds["vi"], method=m["method"],
                                            test=m["test"], labels=ds["labels"],
                                            measure="generic")
            l1o = sensitivity.leave_one_out(fit)
            bnd = (l1o.tau2, m["leave1out"]["tau2"])
            for c in fitcols:
                note(f"leave1out {c}", getattr(l1o, c), m["leave1out"][c], case,
                     bnd if c in ("tau2", "i2", "h2") else None)
            inf = sensitivity.influence(fit)
            for c in ("rstudent", "dffits", "cook_d", "cov_r", "tau2_del", "qe_del", "hat",
                      "weight", "dfbetas"):
                note(f"influence {c}", getattr(inf, c), m["influence"][c], case,
                     (inf.tau2_del, m["influence"]["tau2_del"]) if c == "tau2_del" else None)
            if [bool(x) for x in inf.inf] != m["influence"]["inf"]:
                worst["influence inf flag MISMATCH"] = (1.0, case)
            bj = sensitivity.baujat(fit)
            note("baujat x", bj.x, m["baujat"]["x"], case)
            note("baujat y", bj.y, m["baujat"]["y"], case)
            for key, order in (("cumulative", ds["year"]), ("cumulative_given_order", None)):
                cu = sensitivity.cumulative(fit, order=order)
                bnd = (cu.tau2, m[key]["tau2"])
                for c in fitcols:
                    note(f"cumul {c}", getattr(cu, c), m[key][c], case,
                         bnd if c in ("tau2", "i2", "h2") else None)
            eg = bias.egger_test(fit)
            r = m["regtest"]
            note("regtest zval", eg.stat, r["stat"], case)
            note("regtest pval", eg.pvalue, r["pvalue"], case)
            note("regtest limit estimate", eg.limit_estimate, r["limit_estimate"], case)
            note("regtest limit CI", [eg.limit_ci_lower, eg.limit_ci_upper],
                 [r["limit_ci_lower"], r["limit_ci_upper"]], case)
            rk = bias.rank_test(fit)
            note("ranktest tau", rk.tau, m["ranktest"]["tau"], case)
            note("ranktest pval", rk.pvalue, m["ranktest"]["pvalue"], case)
            for est in ("L0", "R0"):
                tf = bias.trim_and_fill(fit, estimator=est)
                r = m[f"trimfill_{est}"]
                if (tf.k0, tf.side) != (r["k0"], r["side"]):
                    worst[f"trimfill {est} k0/side MISMATCH"] = (1.0, case)
                note(f"trimfill {est} se.k0", tf.se_k0, r["se_k0"], case)
                if est == "R0":
                    note("trimfill R0 p.k0", tf.p_k0, r["p_k0"], case)
                note("trimfill filled yi", tf.filled_yi, r["filled_yi"], case)
                note("trimfill filled vi", tf.filled_vi, r["filled_vi"], case)
                for c in ("estimate", "se", "pvalue", "ci_lower", "ci_upper", "tau2", "i2"):
                    note(f"trimfill {c}", getattr(tf.fit, c), r[c], case,
                         (tf.fit.tau2, r["tau2"]) if c in ("tau2", "i2") else None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = models.random_effects(ds["yi"], ds["vi"], measure="generic")
        pp = bias.pet_peese(fit)
        for line, key, label in ((pp.pet, "regtest_lm_sei", "PET"),
                                 (pp.peese, "regtest_lm_vi", "PEESE")):
            for c in ("intercept", "intercept_se", "intercept_pvalue", "intercept_ci_lower",
                      "intercept_ci_upper", "slope", "slope_t", "slope_pvalue"):
                note(f"{label} {c}", getattr(line, c), ds[key][c], name)
        fs = bias.fail_safe_n(fit)
        r = ds["failsafe_n"]
        note("fsn Rosenthal N", fs.rosenthal, r["rosenthal"]["n"], name)
        note("fsn Rosenthal p", fs.rosenthal_pvalue, r["rosenthal"]["pvalue"], name)
        note("fsn Orwin N", fs.orwin, r["orwin"]["n"], name)
        note("fsn Rosenberg N", fs.rosenberg, r["rosenberg"]["n"], name)
        note("fsn Rosenberg p", fs.rosenberg_pvalue, r["rosenberg"]["pvalue"], name)
    for name, g in ref["gosh"].items():
        for method, r in g["fits"].items():
            fit = models.random_effects(g["yi"], g["vi"], method=method, measure="generic")
            res = sensitivity.gosh(fit)
            case = f"{name} {method} ({res.n_subsets} subsets)"
            same = ["".join("1" if x else "0" for x in row) for row in res.incl] == r["incl"]
            if not same:
                worst["gosh subsets MISMATCH"] = (1.0, case)
            for c in ("q", "i2", "h2", "tau2", "estimate"):
                note(f"gosh {c}", getattr(res, c), r[c], case,
                     (res.tau2, r["tau2"]) if c in ("tau2", "i2", "h2") else None)

    print(f"metafor {ref['metafor_version']}, {ref['R_version']}")
    width = max(len(q) for q in worst)
    print(f"{'quantity':<{width}}  {'max diff':>9}  case")
    for q in sorted(worst):
        d, case = worst[q]
        print(f"{q:<{width}}  {d:9.2e}  {case}")


if __name__ == "__main__":
    main()
