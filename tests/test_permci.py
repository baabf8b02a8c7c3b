"""Permutation-based CIs (metaalliance.engine.permci) against metafor's
``permutest(res, exact = TRUE, permci = TRUE)``.

Reference values: tests/reference/permci.json, written by tests/reference/permci.R (R, metafor
and metadat versions recorded; every evaluation of metafor's .permci is recorded as "path").
A bound is a root of a step function (the permutation p-value of the refitted model), found by
R's uniroot with tol = eps^0.25: only the same path of trial values gives the same bound, so
the path is compared value by value, and the bounds at 1e-6 relative (they agree to rounding).
Random permutations use R's RNG in metafor, so the random mode is tested by its properties.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metaalliance.cli import main
from metaalliance.engine import models
from metaalliance.engine.permci import permutation_ci
from metaalliance.engine.permutation import COMPTOL, permutation_test
from metaalliance.errors import MetaAllianceWarning, OptionError
from cli_run import cli

HERE = Path(__file__).parent / "reference"
REF = json.loads((HERE / "permci.json").read_text())


def _listed(c):
    """jsonlite writes one-coefficient vectors as scalars: make them lists again."""
    for key in ("names", "pval", "beta", "ci_lb", "ci_ub", "perm_ci_lb", "perm_ci_ub"):
        if key in c and not isinstance(c[key], list):
            c[key] = [c[key]]
    return c


CASES = {c["name"]: _listed(c) for c in REF["cases"]}
#: the project's tolerance; the bounds are the same uniroot iterates as R's, so they agree to
#: the last bits of the refits' z values
RTOL = 1e-6


def design(c):
    X = np.asarray(c["X"], dtype=float)
    return X[:, None] if X.ndim == 1 else X


def fit(c, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetaAllianceWarning)
        return models.meta_regression_matrix(c["yi"], c["vi"], design(c), names=c["names"],
                                             method=c["method"], test=c["test"],
                                             level=c["level"], measure="generic",
                                             permutations=1000, exact=True, permci=True, **kw)


def bounds(res):
    lo = [c.perm_ci_lower for c in res.coefficients]
    hi = [c.perm_ci_upper for c in res.coefficients]
    return lo, hi


def test_versions_recorded():
    assert REF["R_version"].startswith("R version")
    assert REF["metafor"] and REF["metadat"]


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["permci"]])
def test_permci_matches_metafor_exact(name):
    c = CASES[name]
    res = fit(c)
    assert res.permutation_exact and res.permutations == c["exact_iter"]
    np.testing.assert_allclose([x.perm_pvalue for x in res.coefficients], c["pval"], rtol=1e-12)
    lo, hi = bounds(res)
    for ours, theirs in ((lo, c["perm_ci_lb"]), (hi, c["perm_ci_ub"])):
        for a, b in zip(ours, theirs):
            if b is None:
                assert a is None              # metafor's NA: no bracket
            else:
                assert a == pytest.approx(b, rel=RTOL, abs=0)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["permci"]])
def test_permci_takes_metafors_uniroot_path(name):
    """Every trial value of R's searches, in order (R also evaluates f at the root at the end
    of each search; ours does not, so R's path is ours with each root inserted)."""
    c = CASES[name]
    X = design(c)
    res = fit(c)
    b = [x.estimate for x in res.coefficients]
    pci = permutation_ci(c["yi"], c["vi"], X, b, [x.ci_lower for x in res.coefficients],
                         [x.ci_upper for x in res.coefficients], c["method"], c["test"],
                         c["level"], 1000, exact=True)
    expected_val, expected_f = [], []
    for j in range(X.shape[1]):
        for side, root in (("lower", pci.lower[j]), ("upper", pci.upper[j])):
            steps = [(v, f) for (jj, s, v, f) in pci.path if jj == j and s == side]
            expected_val += [v for v, _ in steps]
            expected_f += [f for _, f in steps]
            if root is not None:
                expected_val.append(root)
                expected_f.append(dict((v, f) for v, f in steps)[root])
    path = c["path"]
    assert len(path["val"]) == len(expected_val)
    np.testing.assert_allclose(expected_val, path["val"], rtol=RTOL, atol=0)
    np.testing.assert_allclose(expected_f, path["f"], rtol=1e-12, atol=1e-15)


def test_too_few_permutations_as_metafor():
    """2^4 = 16 sign flips: 1/16 > alpha, metafor warns and gives no permutation CI."""
    c = CASES["bcg_first4_reml"]
    assert not c["permci"] and "too low" in c["warning"]
    with pytest.warns(MetaAllianceWarning, match=r"cannot obtain a 95% permutation-based CI: "
                      r"the number of permutations \(16\) is too low"):
        res = models.meta_regression_matrix(c["yi"], c["vi"], design(c), names=c["names"],
                                            measure="generic", permutations=1000, permci=True)
    assert bounds(res) == ([None], [None])
    d = res.to_dict()
    assert d["coefficients"][0]["perm_ci_lower"] is None and d["permci_tests"] == 0


def test_no_bracket_gives_none_with_a_warning():
    """2^5 = 32 sign flips: the one-sided p never drops to 0.025 (1/32 is its least value), so
    uniroot's start interval has f > 0 at both ends: metafor's NA, ours None and a warning."""
    c = CASES["bcg_first5_reml"]
    assert c["permci"] and c["perm_ci_lb"] == [None] and c["perm_ci_ub"] == [None]
    with pytest.warns(MetaAllianceWarning, match=r"permutation CI: no lower bound for "
                      r"coefficient 1 \(metafor's NA\): the search found no bracket"):
        res = models.meta_regression_matrix(c["yi"], c["vi"], design(c), names=c["names"],
                                            measure="generic", permutations=1000, permci=True)
    assert bounds(res) == ([None], [None])


def test_observed_fit_fallback_carries_over_to_the_refits():
    """The curated "~ rater" snapshot under REML: metafor's default Fisher scoring fails on the
    observed data (our fit says so and uses the optimum). metafor has no permutest() result to
    match there, and under its control the refits of the test and of the CI search would fail
    the same way (skipped; no bound). So they use control 'optimum', as the observed fit does:
    no refit is skipped and the bound is found; the same numbers as with control 'optimum'."""
    d = pd.read_csv(HERE / "curated_rater.csv")
    with pytest.warns(MetaAllianceWarning, match=r"permutation refits use control 'optimum', "
                      r"as the observed model does \(metafor's default control cannot fit it\)"):
        res = models.meta_regression(d.yi, d.vi, d, "~ rater", measure="ZCOR",
                                     permutations=200, seed=1, permci=["ratercombined"])
    assert res.permutations_failed == 0
    assert res.coefficient("ratercombined").perm_ci_lower is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = models.meta_regression(d.yi, d.vi, d, "~ rater", measure="ZCOR", permutations=200,
                                     seed=1, permci=["ratercombined"], control="optimum")
    assert res.perm_qm_pvalue == opt.perm_qm_pvalue
    assert (res.coefficient("ratercombined").perm_ci_lower
            == opt.coefficient("ratercombined").perm_ci_lower)


def random_case():
    c = CASES["molloy2014_controls_reml"]
    return c, design(c)


def test_random_mode_is_reproducible_and_brackets_the_estimate():
    c, X = random_case()
    kw = dict(method="REML", test="z", level=95, iterations=300, seed=11)
    res = fit(c)
    b = [x.estimate for x in res.coefficients]
    lo = [x.ci_lower for x in res.coefficients]
    hi = [x.ci_upper for x in res.coefficients]
    a1 = permutation_ci(c["yi"], c["vi"], X, b, lo, hi, **kw)
    a2 = permutation_ci(c["yi"], c["vi"], X, b, lo, hi, **kw)
    assert not a1.exact and a1.iterations == 300
    assert a1.lower == a2.lower and a1.upper == a2.upper and a1.path == a2.path
    j = 1                                   # the slope (permuting rows says nothing on the intercept)
    assert a1.lower[j] < b[j] < a1.upper[j]
    a3 = permutation_ci(c["yi"], c["vi"], X, b, lo, hi, **{**kw, "seed": 12})
    assert a3.path != a1.path


def test_random_mode_p_at_the_bounds_is_the_level():
    """At the lower bound the one-sided ("greater") permutation p-value crosses alpha/2 = 0.025:
    a fresh permutation test (same seed, so the same permutations) just above the bound gives
    p >= 0.025 and just below gives p < 0.025; the mirror at the upper bound."""
    c, X = random_case()
    res = fit(c)
    b = [x.estimate for x in res.coefficients]
    pci = permutation_ci(c["yi"], c["vi"], X, b, [x.ci_lower for x in res.coefficients],
                         [x.ci_upper for x in res.coefficients], iterations=300, seed=5)
    j, tol = 1, 2e-4                        # uniroot stops within tol = eps^0.25 ~ 1.2e-4

    def p_one_sided(val, side):
        y2 = np.asarray(c["yi"]) - val * X[:, j]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MetaAllianceWarning)
            r = models.meta_regression_matrix(y2, c["vi"], X, measure="generic")
        z = r.coefficients[j].stat
        perm = permutation_test(y2, np.asarray(c["vi"]), X, "REML", "z", [1], np.array(
            [x.stat for x in r.coefficients]), r.qm, 300, 5)
        s = perm.stat[:, j]
        s = s[~np.isnan(s)]
        return np.mean(s >= z - COMPTOL) if side == "lower" else np.mean(s <= z + COMPTOL)

    assert p_one_sided(pci.lower[j] + tol, "lower") >= 0.025 > p_one_sided(pci.lower[j] - tol,
                                                                            "lower")
    assert p_one_sided(pci.upper[j] - tol, "upper") >= 0.025 > p_one_sided(pci.upper[j] + tol,
                                                                            "upper")


def test_api_errors():
    c, X = random_case()
    with pytest.raises(OptionError, match=r"permci: needs permutations=N"):
        models.meta_regression_matrix(c["yi"], c["vi"], X, permci=True)
    with pytest.raises(OptionError, match=r"permci: no coefficient 'nope' \(coefficients: "
                                          r"intrcpt, controlsnone\)"):
        models.meta_regression_matrix(c["yi"], c["vi"], X, names=c["names"], permutations=100,
                                      permci=["nope"])
    with pytest.raises(OptionError, match="cialt: 'both' must be one of one.sided, two.sided"):
        permutation_ci(c["yi"], c["vi"], X, [0, 0], [-1, -1], [1, 1], cialt="both")


# ------------------------------------------------------------------------------------------
# the command line


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)



def write_csv(c, name="p.csv"):
    X = design(c)
    df = pd.DataFrame({"yi": c["yi"], "vi": c["vi"]})
    if X.shape[1] > 1:
        df["controls"] = np.where(X[:, 1] == 1, "none", "multiple")
    df.to_csv(name, index=False, float_format="%.17g")
    return name


def test_cli_permci_meta_regression_matches_metafor(capsys, in_tmp):
    c = CASES["molloy2014_controls_reml"]
    code, out, _ = cli(capsys, "pool", "--data", write_csv(c), "--yi", "yi", "--vi", "vi",
                       "--mods", "~ controls", "--permutations", "1000", "--permci", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["permutation_exact"] and d["permutations"] == c["exact_iter"] and d["permci_tests"] > 0
    rows = d["coefficients"]
    assert [r["name"] for r in rows] == c["names"]
    for r, lo, hi in zip(rows, c["perm_ci_lb"], c["perm_ci_ub"]):
        for ours, theirs in ((r["perm_ci_lower"], lo), (r["perm_ci_upper"], hi)):
            assert (ours is None) if theirs is None else ours == pytest.approx(theirs, rel=RTOL)
    code, out, _ = cli(capsys, "pool", "--data", "p.csv", "--yi", "yi", "--vi", "vi",
                       "--mods", "~ controls", "--permutations", "1000", "--permci")
    assert code == 0
    assert "perm.lb perm.ub" in out
    assert "95% permutation-based CI (metafor's permutest(permci = TRUE))" in out


def test_cli_permutations_without_mods_is_the_intercept_only_test(capsys, in_tmp):
    c = CASES["bcg_first10_reml"]
    code, out, _ = cli(capsys, "pool", "--data", write_csv(c), "--yi", "yi", "--vi", "vi",
                       "--permutations", "1024", "--permci", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["permutation_exact"] and d["permutations"] == 1024
    (row,) = d["coefficients"]
    assert row["name"] == "intrcpt"
    assert row["perm_pvalue"] == pytest.approx(c["pval"][0], rel=1e-12)
    assert row["perm_ci_lower"] == pytest.approx(c["perm_ci_lb"][0], rel=RTOL)
    assert row["perm_ci_upper"] == pytest.approx(c["perm_ci_ub"][0], rel=RTOL)


def test_cli_permutations_without_mods_text_names_the_model(capsys, in_tmp):
    c = CASES["bcg_first10_reml"]
    code, out, _ = cli(capsys, "pool", "--data", write_csv(c), "--yi", "yi", "--vi", "vi",
                       "--permutations", "1024")
    assert code == 0
    assert out.splitlines()[0] == "Random-effects model (k = 10; tau^2 estimator: REML; test: z)"


def test_cli_permci_errors(capsys, in_tmp):
    c = CASES["molloy2014_controls_reml"]
    write_csv(c)
    base = ("pool", "--data", "p.csv", "--yi", "yi", "--vi", "vi")
    code, _, err = cli(capsys, *base, "--mods", "~ controls", "--permci")
    assert code == 1
    assert err.strip().splitlines()[-1] == ("error: --permci needs --permutations N (the "
                                            "permutation test it inverts)")
    code, _, err = cli(capsys, *base, "--by", "controls", "--permutations", "100")
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        "error: --permutations cannot be combined with --by, --cluster or --aggregate "
        "(permutest() is for rma.uni models)")


def test_help_explains_permci(capsys):
    with pytest.raises(SystemExit):
        main(["pool", "--help"])
    out = capsys.readouterr().out
    assert "--permci" in out and "permutest(permci = TRUE)" in out
    assert "intercept-only model" in out


def test_extend_searches_beyond_the_start_interval_as_metafor_extendint():
    """control extendInt (extend=True): where the start interval brackets the bound nothing
    changes; where the test can never reach alpha/2 (2^5 sign flips) the widening stops after
    maxiter steps, as R's uniroot ("no sign change found"), and the bound stays None."""
    c = CASES["bcg_first10_reml"]
    X = design(c)
    args = (c["yi"], c["vi"], X, c["beta"], c["ci_lb"], c["ci_ub"])
    plain = permutation_ci(*args, iterations=1000, exact=True)
    ext = permutation_ci(*args, iterations=1000, exact=True, extend=True)
    assert ext.lower == plain.lower and ext.upper == plain.upper
    c5 = CASES["bcg_first5_reml"]
    with pytest.warns(MetaAllianceWarning, match=r"no lower bound for coefficient 1 "
                      r"\(metafor's NA\): the search found no bracket \(no sign change found "
                      r"in 5 iterations\)"):
        r = permutation_ci(c5["yi"], c5["vi"], design(c5), c5["beta"], c5["ci_lb"],
                           c5["ci_ub"], iterations=100, extend=True, maxiter=5)
    assert r.lower == (None,) and r.upper == (None,)
