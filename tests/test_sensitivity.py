"""Sensitivity analyses against metafor 3.8.1 (tests/reference/bias_sensitivity.R writes the
values), plus properties and messages.

Reference datasets (metadat): dat.molloy2014 (Fisher z), dat.bcg (log RR), dat.hackshaw1998
(log OR, k = 37), dat.pritz1997 (logit proportions); GOSH with all subsets on
dat.normand1999 (k = 9) and the first 10 rows of dat.molloy2014. Each dataset is fitted with
several (method, test) settings; every call is named in the test that compares with it.
"""

import json
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from metaalliance.engine import models
from metaalliance.analyses import sensitivity
from metaalliance.errors import DataError, ModelError, OptionError

REF = json.loads((Path(__file__).parent / "reference" / "bias_sensitivity.json").read_text())

#: the project's tolerance for agreement with metafor
RTOL = 1e-6
#: tau^2 at a boundary optimum of 0: metafor's Fisher scoring (even with the reference
#: script's threshold of 1e-12 * mean(vi)) creeps towards 0 and stops a hair above it (up to
#: ~2e-11 here), where our estimator reaches 0 (or ~1e-15); relative error is meaningless
#: there, so tau^2 is also compared with this absolute tolerance (effect-size scale squared)
TAU2_ATOL = 1e-10
#: I^2 (percent) inherits that difference: 100 tau^2 / (vt + tau^2) (largest seen: 1.5e-10)
I2_ATOL = 1e-8

FIT_COLUMNS = ("estimate", "se", "stat", "pvalue", "ci_lower", "ci_upper", "q", "q_pvalue",
               "tau2", "i2", "h2")

CASES = [(name, model) for name, ds in REF["datasets"].items() for model in ds["models"]]


def atol_for(column):
    return {"tau2": TAU2_ATOL, "tau2_del": TAU2_ATOL, "i2": I2_ATOL}.get(column, 0.0)


def close(actual, expected, column=""):
    expected = np.array([np.nan if x is None else x for x in np.atleast_1d(expected)], float)
    np.testing.assert_allclose(np.atleast_1d(np.asarray(actual, float)), expected, rtol=RTOL,
                               atol=atol_for(column), err_msg=column)


#: bias_sensitivity.R runs metafor to (nearly) its optimum (ctrl_for), so the fits and their
#: refits use control = "optimum" (refits take the fit's control); metafor's default control
#: is compared in test_*_matches_metafor_defaults (the "default" references)
TIGHT = "optimum"


def fit_for(name, model, control=TIGHT):
    ds = REF["datasets"][name]
    m = ds["models"][model]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return models.random_effects(ds["yi"], ds["vi"], method=m["method"], test=m["test"],
                                     labels=ds["labels"], measure="generic", control=control)


def test_reference_provenance():
    assert REF["metafor_version"] == "3.8.1"
    assert REF["R_version"].startswith("R version 4.")


@pytest.mark.parametrize("name,model", CASES)
def test_leave_one_out_matches_metafor_leave1out(name, model):
    """leave1out(rma(yi, vi, method, test))"""
    ref = REF["datasets"][name]["models"][model]["leave1out"]
    res = sensitivity.leave_one_out(fit_for(name, model))
    assert list(res.labels) == ref["label"]
    for col in FIT_COLUMNS:
        close(getattr(res, col), ref[col], col)


@pytest.mark.parametrize("name,model", CASES)
def test_influence_matches_metafor_influence(name, model):
    """influence(rma(yi, vi, method, test)): every column of $inf, $dfbs and the '*' flag."""
    ref = REF["datasets"][name]["models"][model]["influence"]
    res = sensitivity.influence(fit_for(name, model))
    for col in ("rstudent", "dffits", "cook_d", "cov_r", "tau2_del", "qe_del", "hat", "weight",
                "dfbetas"):
        close(getattr(res, col), ref[col], col)
    assert [bool(x) for x in res.inf] == ref["inf"]


def test_influence_flags_exist_in_the_reference():
    """The flag comparison above is not vacuous: metafor flags studies in some cases."""
    flagged = {(n, m) for n, m in CASES if any(REF["datasets"][n]["models"][m]["influence"]["inf"])}
    assert ("molloy2014", "EE_z") in flagged and ("hackshaw1998", "EB_z") in flagged
    res = sensitivity.influence(fit_for("molloy2014", "EE_z"))
    assert res.influential == [lab for lab, f in zip(res.labels, res.inf) if f]
    assert len(res.influential) == 2


@pytest.mark.parametrize("name,model", CASES)
def test_baujat_matches_metafor_baujat(name, model):
    """baujat(rma(yi, vi, method, test)) returned coordinates"""
    ref = REF["datasets"][name]["models"][model]["baujat"]
    res = sensitivity.baujat(fit_for(name, model))
    close(res.x, ref["x"], "x")
    close(res.y, ref["y"], "y")


@pytest.mark.parametrize("name,model", CASES)
def test_cumulative_by_year_matches_metafor_cumul(name, model):
    """cumul(rma(yi, vi, method, test), order = year)"""
    ds = REF["datasets"][name]
    ref = ds["models"][model]["cumulative"]
    res = sensitivity.cumulative(fit_for(name, model), order=ds["year"], order_by="year")
    assert list(res.labels) == ref["label"]
    for col in FIT_COLUMNS:
        close(getattr(res, col), ref[col], col)


@pytest.mark.parametrize("name,model", CASES)
def test_cumulative_in_data_order_matches_metafor_cumul(name, model):
    """cumul(rma(yi, vi, method, test)) (no order: the data order)"""
    ref = REF["datasets"][name]["models"][model]["cumulative_given_order"]
    res = sensitivity.cumulative(fit_for(name, model))
    assert list(res.labels) == ref["label"]
    assert list(res.k) == list(range(1, len(ref["label"]) + 1))
    for col in FIT_COLUMNS:
        close(getattr(res, col), ref[col], col)


# --- metafor's default control: plain rma() calls, whose refits keep it -------------------------

DEFAULT = REF["default"]
DEFAULT_CASES = [(name, model) for name, ms in DEFAULT["datasets"].items() for model in ms]


def default_fit(name, model):
    """models.random_effects without control=: metafor's default control, as rma()."""
    ds = REF["datasets"][name]
    m = DEFAULT["datasets"][name][model]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return models.random_effects(ds["yi"], ds["vi"], method=m["method"], test=m["test"],
                                     labels=ds["labels"], measure="generic")


@pytest.mark.parametrize("name,model", DEFAULT_CASES)
def test_sensitivity_matches_metafor_defaults(name, model):
    """leave1out(), influence(), baujat() and cumul() of a plain rma(yi, vi, method, test)
    (metafor's default control, which the refits keep through x$control), against the
    default control = "metafor", at the contract's 1e-6."""
    ds = REF["datasets"][name]
    ref = DEFAULT["datasets"][name][model]
    fit = default_fit(name, model)
    assert fit.control == "metafor"
    for col in ("estimate", "se", "tau2", "i2", "q"):
        close(getattr(fit, col), ref["fit"][col], col)
    res = sensitivity.leave_one_out(fit)
    assert list(res.labels) == ref["leave1out"]["label"]
    for col in FIT_COLUMNS:
        close(getattr(res, col), ref["leave1out"][col], col)
    res = sensitivity.influence(fit)
    for col in ("rstudent", "dffits", "cook_d", "cov_r", "tau2_del", "qe_del", "hat", "weight",
                "dfbetas"):
        close(getattr(res, col), ref["influence"][col], col)
    assert [bool(x) for x in res.inf] == ref["influence"]["inf"]
    res = sensitivity.baujat(fit)
    close(res.x, ref["baujat"]["x"], "x")
    close(res.y, ref["baujat"]["y"], "y")
    for res, key in ((sensitivity.cumulative(fit, order=ds["year"]), "cumulative"),
                     (sensitivity.cumulative(fit), "cumulative_given_order")):
        assert list(res.labels) == ref[key]["label"]
        for col in FIT_COLUMNS:
            close(getattr(res, col), ref[key][col], col)


def test_default_references_differ_from_the_tight_ones():
    """The comparisons above discriminate: metafor's default and tight leave-one-out tau^2
    differ by more than the 1e-6 tolerance."""
    tight = np.array(REF["datasets"]["molloy2014"]["models"]["REML_z"]["leave1out"]["tau2"])
    default = np.array(DEFAULT["datasets"]["molloy2014"]["REML_z"]["leave1out"]["tau2"])
    assert np.max(np.abs(default - tight) / tight) > 1e-5


@pytest.mark.parametrize("method", list(DEFAULT["gosh"]["molloy2014_first10"]))
def test_gosh_matches_metafor_defaults(method):
    """gosh() of a plain rma() (every subset refitted with metafor's default control; PM
    searches [0, max(100, 10 mad(yi)^2)] of each subset)."""
    g = REF["gosh"]["molloy2014_first10"]
    ref = DEFAULT["gosh"]["molloy2014_first10"][method]
    fit = models.random_effects(g["yi"], g["vi"], method=method, measure="generic")
    res = sensitivity.gosh(fit)
    assert ["".join("1" if x else "0" for x in row) for row in res.incl] == ref["incl"]
    for col in ("q", "i2", "h2", "tau2", "estimate"):
        close(getattr(res, col), ref[col], col)


GOSH_CASES = [(name, method) for name, g in REF["gosh"].items() for method in g["fits"]]


@pytest.mark.parametrize("name,method", GOSH_CASES)
def test_gosh_all_subsets_matches_metafor_gosh(name, method):
    """gosh(rma(yi, vi, method)) with all 2^k - 1 subsets (deterministic): the same subsets in
    the same order (sorted by size, R's expand.grid order within a size) and the same fits."""
    g = REF["gosh"][name]
    ref = g["fits"][method]
    fit = models.random_effects(g["yi"], g["vi"], method=method, measure="generic",
                                control=TIGHT)
    res = sensitivity.gosh(fit)
    assert res.exact and res.seed is None
    assert res.n_subsets == 2 ** len(g["yi"]) - 1 == len(ref["k"])
    assert ["".join("1" if x else "0" for x in row) for row in res.incl] == ref["incl"]
    assert list(res.k) == ref["k"]
    for col in ("q", "i2", "h2", "tau2", "estimate"):
        close(getattr(res, col), ref[col], col)


# --- properties ---------------------------------------------------------------------------------

def simulated(k, seed):
    """Simulated data (labelled so): correlations from n in 20..400, true rho ~ N(.25, .1^2)."""
    rng = np.random.default_rng(seed)
    n = rng.integers(20, 400, size=k)
    theta = rng.normal(0.25, 0.1, size=k)
    yi = rng.normal(theta, 1 / np.sqrt(n - 3))
    return yi, 1.0 / (n - 3)


@pytest.mark.parametrize("method,test", [("REML", "z"), ("PM", "knha"), ("EE", "z")])
def test_leave_one_out_rows_equal_single_fits(method, test):
    yi, vi = simulated(12, 1)
    fit = models.random_effects(yi, vi, method=method, test=test, measure="generic")
    res = sensitivity.leave_one_out(fit)
    for i in (0, 5, 11):
        keep = np.arange(12) != i
        one = models.random_effects(yi[keep], vi[keep], method=method, test=test,
                                    measure="generic")
        for col in ("estimate", "se", "ci_lower", "ci_upper", "tau2", "i2", "q"):
            assert getattr(res, col)[i] == pytest.approx(getattr(one, col), rel=1e-12, abs=1e-15)


def test_leave_one_out_is_permutation_equivariant():
    yi, vi = simulated(15, 2)
    perm = np.random.default_rng(3).permutation(15)
    a = sensitivity.leave_one_out(models.random_effects(yi, vi, measure="generic"))
    b = sensitivity.leave_one_out(models.random_effects(yi[perm], vi[perm], measure="generic"))
    np.testing.assert_allclose(b.estimate, a.estimate[perm], rtol=1e-10)
    np.testing.assert_allclose(b.tau2, a.tau2[perm], rtol=1e-8, atol=1e-14)


def test_cumulative_ends_with_the_full_model_and_starts_with_the_first_study():
    yi, vi = simulated(10, 4)
    fit = models.random_effects(yi, vi, test="knha", measure="generic")
    years = np.array([2005, 2001, 2001, 1999, 2010, 2003, 2001, 2008, 2007, 2002])
    res = sensitivity.cumulative(fit, order=years, order_by="year")
    assert list(res.index) == [3, 1, 2, 6, 9, 5, 0, 8, 7, 4]   # stable among the 2001 ties
    assert res.estimate[-1] == pytest.approx(fit.estimate, rel=1e-12)
    assert res.tau2[-1] == pytest.approx(fit.tau2, rel=1e-10)
    # one study: tau^2 = 0, Q = 0, and the z test even under knha (metafor's k = 1 rule)
    assert res.estimate[0] == yi[3] and res.se[0] == pytest.approx(np.sqrt(vi[3]), rel=1e-14)
    assert (res.tau2[0], res.q[0], res.q_pvalue[0], res.i2[0], res.h2[0]) == (0, 0, 1, 0, 1)
    rev = sensitivity.cumulative(fit, order=years, decreasing=True)
    assert list(rev.index) == [4, 7, 8, 0, 5, 9, 1, 2, 6, 3]


def test_gosh_random_subsets_are_seeded_and_sorted():
    yi, vi = simulated(25, 5)
    fit = models.random_effects(yi, vi, method="DL", measure="generic")
    a = sensitivity.gosh(fit, subsets=2000, seed=7)
    b = sensitivity.gosh(fit, subsets=2000, seed=7)
    c = sensitivity.gosh(fit, subsets=2000, seed=8)
    assert not a.exact and a.seed == 7 and a.n_subsets == 2000
    assert np.array_equal(a.incl, b.incl) and np.array_equal(a.estimate, b.estimate)
    assert not np.array_equal(a.incl, c.incl)
    assert np.all(np.diff(a.k) >= 0) and a.k.min() >= 1
    assert np.array_equal(a.k, a.incl.sum(axis=1))
    # each subset's estimate lies within the range of its studies' effects
    for row in (0, 999, 1999):
        sub = yi[a.incl[row]]
        assert sub.min() - 1e-12 <= a.estimate[row] <= sub.max() + 1e-12


def test_gosh_random_subset_matches_a_single_fit():
    yi, vi = simulated(20, 6)
    fit = models.random_effects(yi, vi, method="REML", measure="generic")
    g = sensitivity.gosh(fit, subsets=300, seed=1)
    for row in (10, 150, 299):
        m = g.incl[row]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one = models.random_effects(yi[m], vi[m], method="REML", measure="generic")
        assert g.estimate[row] == pytest.approx(one.estimate, rel=1e-12)
        assert g.i2[row] == pytest.approx(one.i2, rel=1e-8, abs=1e-10)


def test_gosh_summary_and_study_effects():
    g = REF["gosh"]["normand1999"]
    fit = models.random_effects(g["yi"], g["vi"], measure="generic", control=TIGHT)
    res = sensitivity.gosh(fit)
    d = res.summary_dict()
    assert d["subsets"] == 511 and d["exact"] is True and d["k"] == 9
    assert d["estimate"]["mean"] == pytest.approx(np.mean(g["fits"]["REML"]["estimate"]), rel=RTOL)
    s0 = d["studies"][0]
    with_ = [e for e, inc in zip(g["fits"]["REML"]["estimate"], g["fits"]["REML"]["incl"])
             if inc[0] == "1"]
    assert s0["estimate_with"] == pytest.approx(np.mean(with_), rel=RTOL)


def test_run_all_shares_the_refits_and_reports_progress():
    yi, vi = simulated(8, 9)
    fit = models.random_effects(yi, vi, measure="ZCOR")
    seen = []
    res = sensitivity.run_all(fit, order=np.arange(8)[::-1], order_by="rank", gosh_subsets=1000,
                              seed=1, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (2 * 8 + 255, 2 * 8 + 255)
    assert all(a <= b for (a, _), (b, _) in zip(seen, seen[1:]))
    d = res.to_dict()
    assert set(d) >= {"leave_one_out", "influence", "cumulative", "gosh", "baujat"}
    assert d["gosh"]["exact"] is True and d["cumulative_order"] == "rank"
    assert d["leave_one_out"][0]["estimate"] == res.leave_one_out.estimate[0]
    json.dumps(d, allow_nan=False)


def test_large_k_is_fast():
    """Issue 6: leave-one-out + influence at k = 300 (metafor: ~25 s). Simulated data."""
    yi, vi = simulated(300, 10)
    fit = models.random_effects(yi, vi, measure="generic")
    start = time.perf_counter()
    sensitivity.run_all(fit)
    assert time.perf_counter() - start < 20  # a hang guard on a shared machine; ~1 s normally


# --- messages -----------------------------------------------------------------------------------

def test_errors_are_clear():
    # a one-study model (a stand-in object: only yi, vi, method, test, level are read)
    one = SimpleNamespace(yi=np.array([0.3]), vi=np.array([0.01]), method="REML", test="z",
                          level=95.0, labels=None)
    with pytest.raises(ModelError, match=r"^leave-one-out needs at least 2 studies \(k = 1\)$"):
        sensitivity.leave_one_out(one)
    with pytest.raises(ModelError, match=r"^GOSH needs at least 2 studies \(k = 1\)$"):
        sensitivity.gosh(one)
    fit = models.random_effects([0.1, 0.2, 0.3], [0.01, 0.02, 0.03], measure="generic")
    with pytest.raises(DataError, match=r"^order has 2 values but the model has k = 3 studies$"):
        sensitivity.cumulative(fit, order=[1, 2])
    with pytest.raises(OptionError, match=r"^subsets: must be >= 2, got 1$"):
        sensitivity.gosh(fit, subsets=1)
    ident = models.random_effects([0.2, 0.2, 0.2, 0.3], [0.01, 0.02, 0.03, 0.01], test="knha",
                                  measure="generic")
    with pytest.raises(ModelError, match=r"^leave-one-out: without 'Study 4' the effect sizes "
                       r"are identical, so the Knapp-Hartung adjustment is undefined; "
                       r"use test 'z'$"):
        sensitivity.influence(ident)
    with pytest.raises(ModelError, match=r"^cumulative: up to 'Study 2' the effect sizes"):
        sensitivity.cumulative(ident)
    with pytest.raises(OptionError, match=r"^expected a fitted random-effects model"):
        sensitivity.leave_one_out([0.1, 0.2])


# --- the command line ---------------------------------------------------------------------------

def write_csv(path, name):
    ds = REF["datasets"][name]
    lines = ["label,yi,vi,year"] + [f'"{lab}",{y!r},{v!r},{int(yr)}' for lab, y, v, yr in
                                    zip(ds["labels"], ds["yi"], ds["vi"], ds["year"])]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_cli_sensitivity_json_matches_metafor(tmp_path, capsys):
    """`metaalliance sensitivity --json` on a CSV: leave1out, influence and cumul (by the year
    column, the default order) as metafor; no progress bar under --json."""
    from metaalliance.cli import main
    csv = write_csv(tmp_path / "bcg.csv", "bcg")
    assert main(["sensitivity", "--data", csv, "--yi", "yi", "--vi", "vi", "--json",
                 "--control", "optimum"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    out = json.loads(captured.out)
    ref = REF["datasets"]["bcg"]["models"]["REML_z"]
    assert [r["label"] for r in out["leave_one_out"]] == ref["leave1out"]["label"]
    close([r["estimate"] for r in out["leave_one_out"]], ref["leave1out"]["estimate"], "est")
    close([r["cook_d"] for r in out["influence"]], ref["influence"]["cook_d"], "cook_d")
    assert [r["inf"] for r in out["influence"]] == ref["influence"]["inf"]
    assert out["cumulative_order"] == "year"
    assert [r["label"] for r in out["cumulative"]] == ref["cumulative"]["label"]
    close([r["estimate"] for r in out["cumulative"]], ref["cumulative"]["estimate"], "est")
    assert "gosh" not in out


def test_cli_sensitivity_gosh_and_order(tmp_path, capsys):
    from metaalliance.cli import main
    csv = write_csv(tmp_path / "bcg.csv", "bcg")
    assert main(["sensitivity", "--data", csv, "--yi", "yi", "--vi", "vi", "--json",
                 "--gosh", "500", "--seed", "3", "--order", "year", "--decreasing",
                 "--method", "DL"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gosh"]["subsets"] == 500 and out["gosh"]["exact"] is False
    assert out["gosh"]["seed"] == 3 and out["method"] == "DL"
    years = REF["datasets"]["bcg"]["year"]
    first = out["cumulative"][0]["label"]
    assert first == REF["datasets"]["bcg"]["labels"][int(np.argmax(years))]
    assert main(["sensitivity", "--data", csv, "--yi", "yi", "--vi", "vi",
                 "--gosh", "10000"]) == 0
    text = capsys.readouterr().out
    assert "GOSH (metafor gosh): 8191 all subsets of the 13 findings" in text
    assert "Leave-one-out (metafor leave1out)" in text and "ordered by year" in text


def test_cli_sensitivity_messages(tmp_path):
    import subprocess
    import sys
    csv = write_csv(tmp_path / "bcg.csv", "bcg")
    base = [sys.executable, "-m", "metaalliance.cli", "sensitivity", "--data", csv, "--yi", "yi",
            "--vi", "vi"]
    proc = subprocess.run(base + ["--gosh", "100"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr == ("error: --gosh 100: fewer than the 2^13 - 1 subsets, so random "
                           "subsets are drawn; give --seed S to make them reproducible\n")
    proc = subprocess.run(base + ["--seed", "1"], capture_output=True, text=True)
    assert proc.stderr == "error: --seed needs --gosh N\n"
    proc = subprocess.run(base + ["--order", "nope"], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and "nope" in proc.stderr
