"""Print the largest relative differences from R of the issue-13 methods (selection models,
CHE + CR2 + HTZ, RVE, formulas, sigma2 profile CIs, permutation CIs), from the JSON references:

    .venv/bin/python tests/reference/dependence_diffs.py
"""

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from metaalliance.analyses.selection import selection_model
from metaalliance.engine import models
from metaalliance.engine.che import che
from metaalliance.engine.multilevel import three_level
from metaalliance.engine.multilevel_ci import sigma2_profile_ci
from metaalliance.engine.rve import robu

HERE = Path(__file__).parent
warnings.simplefilter("ignore")


def rel(a, b):
    a = np.atleast_1d(np.asarray(a, dtype=float))
    b = np.atleast_1d(np.asarray(b, dtype=float))
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def vec(x):
    return [v for v in np.atleast_1d(x)]


def main():
    out = {}
    sel = json.loads((HERE / "selection.json").read_text())
    worst = {}
    for c in sel["cases"]:
        if "error" in c:
            continue
        steps = tuple(np.atleast_1d(c["steps"])) if c.get("steps") is not None else ()
        X = np.asarray(c["X"], dtype=float) if c.get("X") is not None else None
        r = selection_model(c["yi"], c["vi"], type=c["type"], steps=steps,
                            alternative=c["alternative"], X=X)
        flat = c.get("warning") is not None or c["LRT"] == 0
        key = "selection (flat: delta on its bound)" if flat else f"selection {c['type']}"
        d = worst.setdefault(key, {})
        d["estimate"] = max(d.get("estimate", 0), rel(r.beta, c["beta"]))
        d["tau2"] = max(d.get("tau2", 0), rel(r.tau2, c["tau2"]))
        d["delta"] = max(d.get("delta", 0), rel(r.delta, c["delta"]))
        d["lrt"] = max(d.get("lrt", 0), rel(r.lrt, c["LRT"]) if c["LRT"] > 0 else 0)
        d["loglik (ours - R)"] = max(d.get("loglik (ours - R)", -1), r.loglik - c["ll"])
        if not flat:
            d["se"] = max(d.get("se", 0), rel(r.beta_se, c["se"]))
    out.update(worst)
    dep = json.loads((HERE / "che_rve.json").read_text())
    d = {}
    for c in dep["che"]:
        X = np.asarray(c["X"], dtype=float)
        X = X[:, None] if X.ndim == 1 else X
        r = che(c["yi"], c["vi"], c["cluster"], rho=c["rho"], X=X)
        for k, a, b in (("estimate", [x.estimate for x in r.coefficients], c["beta"]),
                        ("sigma2", r.sigma2, c["sigma2"]),
                        ("robust se", [x.se for x in r.coefficients], c["robust"]["se"]),
                        ("df", r.dfs, c["robust"]["df"])):
            d[k] = max(d.get(k, 0), rel(a, b))
        if "htz" in c:
            d["HTZ F"] = max(d.get("HTZ F", 0), rel(r.robust_test.f, c["htz"]["Fstat"]))
            d["HTZ df"] = max(d.get("HTZ df", 0), rel(r.robust_test.df_denom, c["htz"]["df_denom"]))
    out["CHE + CR2 + HTZ"] = d
    d = {}
    for c in dep["rve"]:
        X = np.asarray(c["X"], dtype=float)
        X = X[:, None] if X.ndim == 1 else X
        r = robu(c["yi"], c["vi"], c["cluster"], X=X, modelweights=c["modelweights"],
                 rho=c["rho"], small=c["small"])
        R = c["result"]
        for k, a, b in (("estimate", [x.estimate for x in r.coefficients], R["b"]),
                        ("se", [x.se for x in r.coefficients], R["se"]), ("df", r.dfs, R["df"]),
                        ("tau2", r.tau2, R["tau2"])):
            d[k] = max(d.get(k, 0), rel(a, b))
    out["RVE (robumeta)"] = d
    f = json.loads((HERE / "formulas.json").read_text())
    data = pd.DataFrame({k: f["data"][k] for k in ("alloc", "ablat", "year")})
    d = {}
    for c in f["cases"]:
        r = models.meta_regression(f["data"]["yi"], f["data"]["vi"], data, c["py_formula"],
                                   measure="generic")
        d["estimate"] = max(d.get("estimate", 0), rel([b.estimate for b in r.coefficients], c["beta"]))
        d["se"] = max(d.get("se", 0), rel([b.se for b in r.coefficients], c["se"]))
    out["formulas (rma mods)"] = d
    m = json.loads((HERE / "multilevel_ci.json").read_text())
    d = {}
    for c in m["cases"]:
        fit = three_level(c["yi"], c["vi"], c["cluster"], method=c["method"], level=c["level"],
                          measure="generic")
        ci = sigma2_profile_ci(fit)
        d["CI bounds"] = max(d.get("CI bounds", 0),
                             rel([ci[0].ci_lower, ci[0].ci_upper, ci[1].ci_lower, ci[1].ci_upper],
                                 [c["sigma2_1"][1], c["sigma2_1"][2], c["sigma2_2"][1],
                                  c["sigma2_2"][2]]))
    out["sigma2 profile CI (confint rma.mv)"] = d
    out.update(permci_diffs())
    for k, v in out.items():
        print(f"{k}: " + ", ".join(f"{a} {b:.1e}" for a, b in v.items()))


def permci_diffs():
    """Per case of permci.json: the bounds, every trial value of the uniroot path (R's path
    has f(root) after each search; ours is rebuilt the same way) and the permutation p."""
    from metaalliance.engine.permci import permutation_ci

    ref = json.loads((HERE / "permci.json").read_text())
    out = {}
    for c in ref["cases"]:
        if not c["permci"]:
            continue
        X = np.asarray(c["X"], dtype=float)
        X = X[:, None] if X.ndim == 1 else X
        r = models.meta_regression_matrix(c["yi"], c["vi"], X, method=c["method"],
                                          test=c["test"], level=c["level"], measure="generic",
                                          permutations=1000, exact=True)
        b = [x.estimate for x in r.coefficients]
        pci = permutation_ci(c["yi"], c["vi"], X, b, [x.ci_lower for x in r.coefficients],
                             [x.ci_upper for x in r.coefficients], c["method"], c["test"],
                             c["level"], 1000, exact=True)
        ours, theirs = [], []
        for a, t in zip(pci.lower + pci.upper, vec(c["perm_ci_lb"]) + vec(c["perm_ci_ub"])):
            if (a is None) != (t is None):
                raise AssertionError(f"{c['name']}: bound found by one side only")
            if a is not None:
                ours.append(a)
                theirs.append(t)
        vals, fs = [], []
        for j in range(X.shape[1]):
            for side, root in (("lower", pci.lower[j]), ("upper", pci.upper[j])):
                steps = [(v, f) for (jj, sd, v, f) in pci.path if jj == j and sd == side]
                vals += [v for v, _ in steps]
                fs += [f for _, f in steps]
                if root is not None:
                    vals.append(root)
                    fs.append(dict(steps)[root])
        d = {"bounds": rel(ours, theirs) if ours else 0.0,
             "path values": rel(vals, c["path"]["val"]),
             "path f (abs)": float(np.max(np.abs(np.asarray(fs) - c["path"]["f"]))),
             "perm p": rel([x.perm_pvalue for x in r.coefficients], c["pval"])}
        out[f"permci {c['name']} ({len(vals)} evaluations)"] = d
    return out


if __name__ == "__main__":
    main()
