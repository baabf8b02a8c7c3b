"""Print the largest relative difference from metafor/clubSandwich per quantity.

Run: .venv/bin/python tests/reference/multilevel_diff.py   (reads multilevel.json; no R)
Variance components on the boundary (metafor ~1e-12, ours 0) are listed apart as absolute
differences.
"""

import json
import warnings
from pathlib import Path

import numpy as np


def main():
    from metaalliance.engine import models
    from metaalliance.engine import aggregation as ag
    from metaalliance.engine import cluster_robust as cr
    from metaalliance.engine import multilevel as ml

    ref = json.loads((Path(__file__).parent / "multilevel.json").read_text())
    worst: dict[str, tuple[float, str]] = {}

    def note(q, ours, theirs, case, boundary=False):
        a = np.atleast_1d(np.asarray(ours, dtype=float)).ravel()
        b = np.atleast_1d(np.asarray(theirs, dtype=float)).ravel()
        if b.size == 1 and a.size > 1:
            b = np.full(a.size, b[0])
        tiny = (np.abs(b) < 1e-9) if boundary else np.zeros(b.size, dtype=bool)
        if tiny.any():
            d = float(np.max(np.abs(a[tiny] - b[tiny])))
            key = q + " (boundary, absolute)"
            if d >= worst.get(key, (-1, ""))[0]:
                worst[key] = (d, case)
        if (~tiny).any():
            d = float(np.max(np.abs(a[~tiny] - b[~tiny]) / np.abs(b[~tiny])))
            if d >= worst.get(q, (-1, ""))[0]:
                worst[q] = (d, case)

    for name, c in ref["cases"].items():
        X = np.asarray(c["X"]) if "X" in c else None
        fit = ml.three_level(c["yi"], c["vi"], c["cluster"], method=c["method"], test=c["test"],
                             X=X, coef_names=c.get("coef_names"), measure="generic")
        co = fit.coefficients
        note("estimate", [x.estimate for x in co], c["estimate"], name)
        note("se", [x.se for x in co], c["se"], name)
        note("stat (z/t)", [x.stat for x in co], c["stat"], name)
        note("pvalue", [x.pvalue for x in co], c["pvalue"], name)
        note("ci", [x.ci_lower for x in co] + [x.ci_upper for x in co],
             list(np.atleast_1d(c["ci_lower"])) + list(np.atleast_1d(c["ci_upper"])), name)
        note("pi", [fit.pi_lower, fit.pi_upper], [c["pi_lower"], c["pi_upper"]], name)
        note("sigma2", fit.sigma2, c["sigma2"], name, boundary=True)
        note("loglik", fit.loglik, c["loglik"], name)
        note("aic/bic/aicc", [fit.aic, fit.bic, fit.aicc], [c["aic"], c["bic"], c["aicc"]], name)
        note("q (QE)", fit.q, c["q"], name)
        note("q_pvalue", fit.q_pvalue, c["q_pvalue"], name)
        note("i2 total", fit.i2, c["i2"], name)
        note("i2 levels", fit.i2_levels, c["i2_levels"], name, boundary=True)
        note("weights", fit.weights, c["weights"], name)
        if "qm" in c:
            note("qm / qm_pvalue", [fit.qm, fit.qm_pvalue], [c["qm"], c["qm_pvalue"]], name)
        for key, cs in (("robust_cr2", True), ("robust_cr1", False)):
            if key in c:
                r = cr.robust(fit, clubSandwich=cs)
                rc = c[key]
                tag = "CR2" if cs else "CR1"
                note(f"robust {tag} se", [x.se for x in r.coefficients], rc["se"], name)
                note(f"robust {tag} df", r.dfs, rc["df"], name)
                note(f"robust {tag} pvalue", [x.pvalue for x in r.coefficients], rc["pvalue"], name)
                note(f"robust {tag} ci", [x.ci_lower for x in r.coefficients]
                     + [x.ci_upper for x in r.coefficients],
                     list(np.atleast_1d(rc["ci_lower"])) + list(np.atleast_1d(rc["ci_upper"])), name)
    for name, c in ref["univariate_robust"].items():
        r = cr.robust((c["yi"], c["vi"]), c["cluster"], model="random_effects")
        rc = c["robust_cr2"]
        note("rma.uni robust CR2 se/df/p", [r.se, r.df, r.pvalue],
             [rc["se"], rc["df"], rc["pvalue"]], name)
    for name, c in ref["aggregate"].items():
        a = ag.aggregate(c["yi"], c["vi"], c["cluster"], rho=c["rho"])
        note("aggregate yi/vi", list(a.yi) + list(a.vi), c["agg_yi"] + c["agg_vi"], name)
    c = ref["single_finding"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = ml.three_level(c["yi"], c["vi"], c["cluster"])
    note("one finding/cluster vs rma.uni", [f.estimate, f.se, sum(f.sigma2), f.loglik],
         [c["uni_estimate"], c["uni_se"], c["uni_tau2"], c["uni_loglik"]], "molloy2014")
    print(f"metafor {ref['metafor']}, clubSandwich {ref['clubSandwich']}, {ref['R_version']}")
    print(f"{'quantity':38s} {'max rel. diff':>14s}  case")
    for q, (d, case) in worst.items():
        print(f"{q:38s} {d:14.2e}  {case}")


if __name__ == "__main__":
    main()
