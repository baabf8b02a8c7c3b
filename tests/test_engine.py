"""Properties and error messages of the univariate engine (estimators, inference, models,
results, the pool command). Numbers from outside sources are in test_reference_univariate.py;
here: hand-worked formulas, invariances that must hold, and exact messages.

Random data in this file are simulated (seeded numpy generators / hypothesis), labelled so.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaalliance.engine import estimators as est
from metaalliance.engine import models
from metaalliance.errors import DataError, MetaAllianceWarning, ModelError, OptionError
from metaalliance.options import METHODS
from conftest import patch_engine

RTOL = 1e-6
#: batch and single fits run the same arithmetic on differently shaped arrays; einsum/BLAS may
#: sum in another order, so they agree to rounding, not bit for bit
RTOL_BATCH = 1e-9

REF = json.loads((Path(__file__).parent / "reference" / "univariate.json").read_text())
MOLLOY_Y = np.array(REF["datasets"]["molloy2014"]["yi"])
MOLLOY_V = np.array(REF["datasets"]["molloy2014"]["vi"])
BCG = REF["datasets"]["bcg"]


def simulated(k, seed, tau=0.1, mu=0.25):
    """Simulated correlations on the z scale (seeded; not real data)."""
    rng = np.random.default_rng(seed)
    n = rng.integers(20, 400, k)
    v = 1.0 / (n - 3)
    y = mu + rng.normal(0, tau, k) + rng.normal(0, np.sqrt(v))
    return y, v


def quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **kw)


# --- hand-worked formulas --------------------------------------------------------------------

def test_dl_closed_form_and_i2():
    """DL: tau2 = (Q - (k-1)) / (sum w - sum w^2 / sum w); I2 = 100 tau2 / (tau2 + vt)."""
    y, v = MOLLOY_Y, MOLLOY_V
    w = 1 / v
    mu = np.sum(w * y) / w.sum()
    q = np.sum(w * (y - mu) ** 2)
    c = w.sum() - np.sum(w ** 2) / w.sum()
    tau2 = max(0.0, (q - (y.size - 1)) / c)
    vt = (y.size - 1) / c
    res = models.random_effects(y, v, method="DL")
    assert res.q == pytest.approx(q, rel=RTOL)
    assert res.tau2 == pytest.approx(tau2, rel=RTOL)
    assert res.vt == pytest.approx(vt, rel=RTOL)
    assert res.i2 == pytest.approx(100 * tau2 / (tau2 + vt), rel=RTOL)
    assert res.h2 == pytest.approx(1 + tau2 / vt, rel=RTOL)
    ws = 1 / (v + tau2)
    assert res.estimate == pytest.approx(np.sum(ws * y) / ws.sum(), rel=RTOL)
    assert res.se == pytest.approx(math.sqrt(1 / ws.sum()), rel=RTOL)
    assert res.weights == pytest.approx(100 * ws / ws.sum(), rel=RTOL)
    assert res.weights.sum() == pytest.approx(100.0)


def test_ee_model_has_tau2_zero_and_i2_from_q():
    res = quiet(models.random_effects, MOLLOY_Y, MOLLOY_V, method="EE")
    assert res.tau2 == 0.0 and res.se_tau2 is None
    assert res.i2 == pytest.approx(100 * (res.q - res.q_df) / res.q, rel=RTOL)
    assert (res.pi_lower, res.pi_upper) == (res.ci_lower, res.ci_upper)


def test_eb_equals_pm():
    """metafor's EB iteration has the PM fixed point Q(tau2) = k - p (at the optimum; under
    metafor's default control each stops ~1e-5 short of it, in its own way)."""
    for seed in range(5):
        y, v = simulated(20, seed)
        assert est.tau2_batch(y, v, "EB", control="optimum") == pytest.approx(
            est.tau2_batch(y, v, "PM", control="optimum"), rel=1e-10)


def test_pm_solves_generalised_q_equation():
    y, v = simulated(30, 3, tau=0.2)
    tau2 = est.tau2_batch(y, v, "PM", control="optimum")
    w = 1 / (v + tau2)
    mu = np.sum(w * y) / w.sum()
    assert np.sum(w * (y - mu) ** 2) == pytest.approx(y.size - 1, rel=1e-10)
    # metafor's default control: uniroot(tol = eps^0.25) stops within ~1.2e-4 of the root
    t_mf = est.tau2_batch(y, v, "PM")
    assert t_mf != tau2 and abs(t_mf - tau2) < est.MF_TOL


def test_trace_formulas_equal_explicit_matrices():
    """The O(k p^2) traces equal metafor's k x k matrix expressions."""
    rng = np.random.default_rng(7)       # simulated
    k = 12
    X = np.column_stack([np.ones(k), rng.normal(size=k), rng.integers(0, 2, k)])
    v = rng.uniform(0.01, 0.1, k)
    y = rng.normal(size=k)
    for tau2 in (0.0, 0.05):
        w = 1 / (v + tau2)
        W, V = np.diag(w), np.diag(v)
        P = W - W @ X @ np.linalg.inv(X.T @ W @ X) @ X.T @ W
        f = est.wls(X, w[:, None], y[:, None])
        args = (f, X, w[:, None])
        assert est.trace_P(f, w[:, None])[0] == pytest.approx(np.trace(P), rel=1e-10)
        assert est.trace_PP(*args, False)[0] == pytest.approx(np.sum(P * P), rel=1e-10)
        PV = P @ V
        assert est.trace_PV(f, w[:, None], v[:, None])[0] == pytest.approx(np.trace(PV), rel=1e-10)
        assert est.trace_PVPV(f, X, w[:, None], v[:, None], False)[0] == pytest.approx(
            np.sum(PV * PV.T), rel=1e-10)
        assert est.trace_PPV(f, X, w[:, None], v[:, None], False)[0] == pytest.approx(
            np.sum(PV * P), rel=1e-10)
        assert (w * f.r[:, 0] ** 2).sum() == pytest.approx(y @ P @ y, rel=1e-10)


def test_safeguarded_newton_finds_the_fisher_scoring_optimum():
    """Where plain Fisher scoring converges, the bracketed fallback reaches the same tau2."""
    for seed in range(5):
        y, v = simulated(25, seed)
        Y, V, X, M, _ = est.as_batch(y, v)
        Yc = est.centered(Y, M)
        for method in ("ML", "REML"):
            t_safe, ok = est._score_root(method, Yc, V, M, X, True, est.vbar(V, M))
            assert ok.all()
            assert t_safe[0] == pytest.approx(est.tau2_batch(y, v, method, control="optimum"),
                                              rel=1e-8, abs=1e-12)


def test_divergent_fisher_scoring_is_rescued():
    """A near-saturated design (simulated data; seed found by search) on which metafor's plain
    Fisher scoring oscillates without converging: the safeguarded Newton step reaches the REML
    optimum (score = 0, log-likelihood above its neighbours)."""
    rng = np.random.default_rng(1810)
    k = 10
    X = np.column_stack([np.ones(k), np.eye(k)[:, :3], rng.normal(size=k)])
    v = rng.uniform(0.005, 0.05, k)
    y = rng.normal(0, 0.15, k)
    fit = est.tau2_fit(y, v, "REML", X=X)
    assert fit.safeguarded[0] and fit.converged[0] and fit.tau2[0] > 0
    Y, V, XX, M, _ = est.as_batch(y, v, X)
    Yc = est.centered(Y, M)
    s, ds = est._score("REML", Yc, V, M, XX, False, fit.tau2)
    assert abs(s[0]) < 1e-8 * np.sum(1 / v) and ds[0] < 0
    ll = [est.loglik("REML", Yc, V, M, XX, fit.tau2 * f)[0] for f in (0.99, 1.0, 1.01)]
    assert ll[1] > ll[0] and ll[1] > ll[2]


# --- properties ----------------------------------------------------------------------------------

effects = st.lists(st.tuples(st.floats(-1.5, 1.5), st.floats(0.001, 0.5)), min_size=2, max_size=25)


@settings(max_examples=60, deadline=None)
@given(effects, st.sampled_from(METHODS), st.sampled_from(("z", "knha")))
def test_estimate_between_min_and_max_and_tau2_nonnegative(data, method, test):
    """Hypothesis-generated (simulated) data sets."""
    y = np.array([d[0] for d in data])
    v = np.array([d[1] for d in data])
    try:
        res = quiet(models.random_effects, y, v, method=method, test=test)
    except ModelError as exc:
        # (near-)identical effects: metafor's s2w = 0 when the weighted RSS <= eps
        assert test == "knha" and "Knapp-Hartung adjustment is undefined" in str(exc)
        return
    assert y.min() - 1e-12 <= res.estimate <= y.max() + 1e-12
    assert res.tau2 >= 0 and 0 <= res.i2 < 100
    if method == "EE":      # metafor: H2 = Q / (k - 1) for EE models, below 1 when Q < k - 1
        assert res.h2 == pytest.approx(res.q / res.q_df, rel=1e-12)
    else:
        assert res.h2 >= 1
    assert res.ci_lower <= res.estimate <= res.ci_upper
    assert res.pi_lower <= res.ci_lower and res.pi_upper >= res.ci_upper
    assert res.tau2_ci_lower <= res.tau2_ci_upper
    d = res.to_dict()
    json.dumps(d, allow_nan=False)              # never NaN


@pytest.mark.parametrize("method", METHODS)
def test_permutation_invariance(method):
    y, v = simulated(15, 11)
    perm = np.random.default_rng(0).permutation(y.size)
    a = quiet(models.random_effects, y, v, method=method)
    b = quiet(models.random_effects, y[perm], v[perm], method=method)
    for key in ("estimate", "se", "tau2", "q", "i2", "tau2_ci_lower", "tau2_ci_upper"):
        assert getattr(b, key) == pytest.approx(getattr(a, key), rel=1e-9, abs=1e-14)


@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_single(method):
    rng = np.random.default_rng(5)           # simulated
    k, B = 14, 30
    v = rng.uniform(0.005, 0.08, k)
    Y = 0.2 + rng.normal(0, 0.15, (k, B)) + rng.normal(0, np.sqrt(v)[:, None], (k, B))
    tb = est.tau2_batch(Y, v, method)
    for b in range(B):
        assert tb[b] == pytest.approx(est.tau2_batch(Y[:, b], v, method), rel=RTOL_BATCH, abs=1e-15)
    bb = quiet(models.random_effects_batch, Y, v, method=method, test="knha")
    for b in (0, 7, 29):
        s = quiet(models.random_effects, Y[:, b], v, method=method, test="knha")
        for key in ("estimate", "se", "stat", "pvalue", "ci_lower", "ci_upper", "pi_lower",
                    "pi_upper", "tau2", "q", "q_pvalue", "i2", "h2"):
            assert getattr(bb, key)[b] == pytest.approx(getattr(s, key), rel=RTOL_BATCH, abs=1e-14)


def test_batch_with_mask_equals_fit_on_subset():
    """Leave-one-out through a mask equals fitting the k - 1 studies."""
    y, v = MOLLOY_Y, MOLLOY_V
    k = y.size
    mask = ~np.eye(k, dtype=bool)
    Y = np.repeat(y[:, None], k, axis=1)
    for method in ("REML", "DL", "PM"):
        bb = models.random_effects_batch(Y, v, method=method, mask=mask)
        for i in (0, 5, k - 1):
            keep = mask[:, i]
            s = models.random_effects(y[keep], v[keep], method=method)
            assert bb.estimate[i] == pytest.approx(s.estimate, rel=RTOL_BATCH)
            assert bb.tau2[i] == pytest.approx(s.tau2, rel=RTOL_BATCH, abs=1e-15)
            assert bb.k[i] == k - 1


def test_batch_cumulative_starts_with_k1():
    y, v = MOLLOY_Y[:5], MOLLOY_V[:5]
    mask = np.tri(5, dtype=bool).T                # column j: studies 0..j
    bb = models.random_effects_batch(np.repeat(y[:, None], 5, 1), v, mask=mask, test="knha")
    assert bb.k.tolist() == [1, 2, 3, 4, 5]
    assert bb.estimate[0] == y[0] and bb.tau2[0] == 0 and bb.se[0] == pytest.approx(math.sqrt(v[0]))


def test_tau2_batch_with_moderators_equals_meta_regression():
    df = pd.DataFrame({"alloc": BCG["data"]["alloc"], "ablat": BCG["data"]["ablat"]})
    X, names, _ = models.design_matrix(df, "~ alloc + ablat")
    y, v = np.array(BCG["yi"]), np.array(BCG["vi"])
    for method in METHODS:
        reg = quiet(models.meta_regression, y, v, df, "~ alloc + ablat", method=method)
        assert est.tau2_batch(y, v, method, X=X) == pytest.approx(reg.tau2, rel=RTOL_BATCH, abs=1e-15)


# --- k = 1 and edge cases ------------------------------------------------------------------------

def test_k1_follows_metafor():
    with pytest.warns(MetaAllianceWarning, match="k = 1: tau"):
        res = models.random_effects([0.3], [0.01])
    assert (res.estimate, res.se, res.tau2, res.q, res.q_df, res.q_pvalue, res.i2, res.h2) == \
        (0.3, pytest.approx(0.1), 0.0, 0.0, 0, 1.0, 0.0, 1.0)
    assert res.se_tau2 is None and res.tau2_ci_lower is None and res.i2_ci_upper is None
    with pytest.warns(MetaAllianceWarning) as rec:
        res = models.random_effects([0.3], [0.01], test="knha")
    assert [str(w.message) for w in rec] == [
        "k = 1: tau^2 is set to 0 and heterogeneity cannot be assessed (as metafor)",
        "test 'knha' needs k >= 2; using test 'z' (as metafor)"]
    assert res.test == "z"
    json.dumps(res.to_dict(), allow_nan=False)


def test_identical_effects():
    res = models.random_effects([0.2, 0.2, 0.2], [0.01, 0.02, 0.03])
    assert res.tau2 == 0 and res.q == pytest.approx(0, abs=1e-20) and res.i2 == 0
    with pytest.raises(ModelError, match="Knapp-Hartung adjustment is undefined"):
        models.random_effects([0.2, 0.2, 0.2], [0.01, 0.02, 0.03], test="knha")


def test_dl_fallback_when_estimation_fails(monkeypatch):
    """If even the safeguarded step fails, DL is used with a warning and flagged."""
    patch_engine(monkeypatch, "MF_MAXITER", 0)      # metafor's default control fails too
    patch_engine(monkeypatch, "MAXITER", 1)
    patch_engine(monkeypatch, "CONV_TOL_ACCEPT", 0.0)
    patch_engine(monkeypatch, "_score_root",
                        lambda method, Yc, *a: (np.zeros(Yc.shape[1]), np.zeros(Yc.shape[1], bool)))
    with pytest.warns(MetaAllianceWarning, match="REML estimation of tau\\^2 did not converge; "
                                                 "using the DL estimate"):
        res = models.random_effects(MOLLOY_Y, MOLLOY_V)
    assert not res.converged and res.method_used == "DL"
    assert res.tau2 == pytest.approx(models.random_effects(MOLLOY_Y, MOLLOY_V, method="DL").tau2)
    assert res.provenance["method_used"] == "DL"


# --- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("yi, vi, message", [
    ([0.1, 0.2], [0.01], "yi has 2 values but vi has 1"),
    ([], [], "no studies: yi is empty"),
    ([0.1, float("nan")], [0.01, 0.02], "yi has missing or non-finite values at position(s) 2"),
    ([0.1, 0.2], [0.01, float("inf")], "vi has missing or non-finite values at position(s) 2"),
    ([0.1, 0.2, 0.3], [0.01, 0.0, -1], "vi must be > 0; not so at position(s) 2, 3"),
    (["a", "b"], [0.01, 0.02], "yi and vi must be numeric"),
])
def test_data_errors(yi, vi, message):
    with pytest.raises(DataError) as exc:
        models.random_effects(yi, vi)
    assert str(exc.value) == message


def test_option_errors():
    with pytest.raises(OptionError, match="method: 'FOO' is not one of EE, DL"):
        models.random_effects([0.1, 0.2], [0.01, 0.02], method="FOO")
    with pytest.raises(OptionError, match="test: 't' is not one of z, knha"):
        models.random_effects([0.1, 0.2], [0.01, 0.02], test="t")
    with pytest.raises(OptionError, match="level: 150 must be a percentage between 50 and 100"):
        models.random_effects([0.1, 0.2], [0.01, 0.02], level=150)
    with pytest.raises(OptionError, match="measure: 'COR' is not one of ZCOR, generic"):
        models.random_effects([0.1, 0.2], [0.01, 0.02], measure="COR")
    with pytest.raises(OptionError, match="tau2_model: 'both'"):
        models.subgroups([0.1, 0.2], [0.01, 0.02], ["a", "b"], tau2_model="both")
    with pytest.raises(OptionError, match="control: 'exact' is not one of metafor, optimum"):
        models.random_effects([0.1, 0.2], [0.01, 0.02], control="exact")
    with pytest.raises(OptionError, match="control: 'tight' is not one of metafor, optimum"):
        est.tau2_batch([0.1, 0.2], [0.01, 0.02], control="tight")


def test_level_as_fraction():
    a = models.random_effects(MOLLOY_Y, MOLLOY_V, level=0.9)
    b = models.random_effects(MOLLOY_Y, MOLLOY_V, level=90)
    assert a.level == b.level == 90 and a.ci_lower == b.ci_lower


def test_collinear_design_names_the_columns():
    df = pd.DataFrame({"a": [1.0, 2, 3, 4, 5, 6], "b": [2.0, 4, 6, 8, 10, 12],
                       "c": ["x", "y", "x", "y", "x", "y"]})
    y, v = simulated(6, 1)
    with pytest.raises(ModelError) as exc:
        models.meta_regression(y, v, df, "~ a + b + c")
    assert str(exc.value) == ("design matrix is not of full rank: column(s) 'b' are constant or "
                              "a linear combination of other columns ('intrcpt', 'a', 'cy')")
    df["d"] = 1.0
    with pytest.raises(ModelError, match="column\\(s\\) 'd' are constant"):
        models.meta_regression(y, v, df, "~ a + d")


def test_too_few_studies_for_the_model():
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.0, 1.0, 5.0]})
    with pytest.raises(ModelError, match="the model has 3 coefficients but only 3 studies"):
        models.meta_regression([0.1, 0.2, 0.3], [0.01] * 3, df, "~ a + b")


def test_formula_errors():
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0]})
    y, v = [0.1, 0.2, 0.3, 0.1], [0.01] * 4
    with pytest.raises(DataError, match="formula: no column 'b' in the data \\(columns: a\\)"):
        models.meta_regression(y, v, df, "~ b")
    # formulas go through formulaic, but nothing typed is run as Python: calls are whitelisted
    with pytest.raises(OptionError, match="formula: function 'eval' is not supported"):
        models.meta_regression(y, v, df, "~ eval(a)")
    with pytest.raises(OptionError, match="formula: cannot read '.system"):
        models.meta_regression(y, v, df, "~ a + os.system(1)")
    with pytest.raises(OptionError, match="formula: name '__import__' is not allowed"):
        models.meta_regression(y, v, df, "~ I(__import__)")
    with pytest.raises(OptionError, match="formula: 'a' must look like '~ a \\+ b'"):
        models.meta_regression(y, v, df, "a")


# --- design matrices -----------------------------------------------------------------------------

def test_design_matrix_factor_coding():
    df = pd.DataFrame({"inst": ["WAI", "HAq", "WAI-S", "HAq", "WAI"], "year": [2001, 1999, 2010, 2005, 2001],
                       "flag": [True, False, True, True, False]})
    X, names, keep = models.design_matrix(df, "~ inst + year + factor(year) + flag")
    assert names == ["intrcpt", "instWAI", "instWAI-S", "year", "factor(year)2001",
                     "factor(year)2005", "factor(year)2010", "flagTRUE"]
    assert X[:, 1].tolist() == [1, 0, 0, 0, 1] and X[:, 7].tolist() == [1, 0, 1, 1, 0]
    X, names, _ = models.design_matrix(df, "~ inst - 1")
    assert names == ["instHAq", "instWAI", "instWAI-S"]


def test_missing_moderators_are_omitted_with_a_warning():
    df = pd.DataFrame({"a": [1.0, 2.0, None, 4.0, 5.0, 3.0]})
    y, v = simulated(6, 2)
    with pytest.warns(MetaAllianceWarning, match="1 row\\(s\\) with missing moderator values omitted"):
        res = models.meta_regression(y, v, df, "~ a")
    full = models.meta_regression(np.delete(y, 2), np.delete(v, 2), df.drop(index=2), "~ a")
    assert res.omitted == 1 and res.k == 5 and res.qm == pytest.approx(full.qm, rel=1e-12)


# --- permutation test ----------------------------------------------------------------------------

def test_permutation_test_is_reproducible_and_p_at_least_one_over_iter():
    df = pd.DataFrame({"alloc": BCG["data"]["alloc"], "ablat": BCG["data"]["ablat"]})
    y, v = np.array(BCG["yi"]), np.array(BCG["vi"])
    a = models.meta_regression(y, v, df, "~ ablat", permutations=200, seed=42)
    b = models.meta_regression(y, v, df, "~ ablat", permutations=200, seed=42)
    assert a.perm_qm_pvalue == b.perm_qm_pvalue >= 1 / 200
    assert not a.permutation_exact and a.permutations == 200 and a.seed == 42
    assert [c.perm_pvalue for c in a.coefficients] == [c.perm_pvalue for c in b.coefficients]
    # with one moderator QM = z^2: the two permutation p-values are the same
    assert a.perm_qm_pvalue == a.coefficient("ablat").perm_pvalue


def test_multiset_permutations():
    perms = models._multiset_permutations([0, 0, 1, 2])
    assert len(perms) == 12 == round(models._exact_count([0, 0, 1, 2]))
    assert len({tuple(p) for p in perms}) == 12


# --- results -------------------------------------------------------------------------------------

POOL_KEYS = ["k", "omitted", "measure", "method", "test", "estimate", "se", "ci_lower", "ci_upper",
             "pi_lower", "pi_upper", "tau2", "tau2_ci_lower", "tau2_ci_upper", "i2", "i2_ci_lower",
             "i2_ci_upper", "h2", "q", "q_df", "q_pvalue", "back_transformed"]


def test_to_dict_is_the_pool_json_form():
    res = models.random_effects(MOLLOY_Y, MOLLOY_V)
    d = res.to_dict()
    assert list(d) == POOL_KEYS
    assert list(d["back_transformed"]) == ["estimate", "ci_lower", "ci_upper", "pi_lower", "pi_upper"]
    assert d["back_transformed"]["estimate"] == pytest.approx(math.tanh(res.estimate))
    g = models.random_effects(MOLLOY_Y, MOLLOY_V, measure="generic").to_dict()
    assert "back_transformed" not in g


def test_meta_regression_and_subgroup_json_forms():
    df = pd.DataFrame({"alloc": BCG["data"]["alloc"], "ablat": BCG["data"]["ablat"]})
    y, v = np.array(BCG["yi"]), np.array(BCG["vi"])
    d = models.meta_regression(y, v, df, "~ alloc + ablat", measure="generic").to_dict()
    assert list(d) == ["k", "method", "test", "coefficients", "tau2", "qm", "qm_df", "qm_pvalue",
                       "qe", "qe_df", "qe_pvalue", "r2"]
    assert list(d["coefficients"][0]) == ["name", "estimate", "se", "ci_lower", "ci_upper", "pvalue"]
    s = models.subgroups(y, v, df["alloc"], by="alloc", measure="generic").to_dict()
    assert list(s) == ["by", "tau2_model", "subgroups", "q_between", "q_between_df",
                       "q_between_pvalue"]
    assert list(s["subgroups"][0]) == ["level", "k", "estimate", "se", "ci_lower", "ci_upper", "tau2"]
    json.dumps([d, s], allow_nan=False)


def test_provenance_and_hash():
    res = models.random_effects(MOLLOY_Y, MOLLOY_V, method="PM", test="knha")
    h = hashlib.sha256(MOLLOY_Y.astype("<f8").tobytes() + MOLLOY_V.astype("<f8").tobytes())
    p = res.provenance
    assert p["data_hash"] == h.hexdigest()
    assert (p["method"], p["test"], p["k"]) == ("PM", "knha", 16)
    assert set(p["versions"]) == {"metaalliance", "numpy", "scipy"}


def test_results_are_frozen_and_arrays_read_only():
    res = models.random_effects(MOLLOY_Y, MOLLOY_V)
    with pytest.raises(AttributeError):
        res.estimate = 0
    with pytest.raises(ValueError):
        res.yi[0] = 1


def test_to_frame_scales():
    res = models.random_effects(MOLLOY_Y, MOLLOY_V, labels=[f"s{i}" for i in range(16)])
    z = res.to_frame("z")
    r = res.to_frame("r")
    assert list(z.columns) == ["label", "yi", "vi", "se", "ci_lower", "ci_upper", "weight"]
    assert list(r.columns) == ["label", "r", "ci_lower", "ci_upper", "weight"]
    assert r["r"].to_numpy() == pytest.approx(np.tanh(MOLLOY_Y))
    assert z["ci_lower"][0] == pytest.approx(MOLLOY_Y[0] - 1.959963984540054 * math.sqrt(MOLLOY_V[0]))
    with pytest.raises(OptionError, match="scale: 'r' needs measure 'ZCOR'"):
        models.random_effects(MOLLOY_Y, MOLLOY_V, measure="generic").to_frame("r")


def test_summary_rounds_only_for_display():
    res = models.random_effects(MOLLOY_Y, MOLLOY_V)
    text = res.summary()
    assert "Random-effects model (k = 16; tau^2 estimator: REML; test: z)" in text
    assert f"{res.estimate:8.4f}" in text and "Q(df = 15) = 38.1595" in text
    assert res.estimate != round(res.estimate, 4)


def test_subgroups_pooled_equals_meta_regression_qm():
    df = pd.DataFrame({"alloc": BCG["data"]["alloc"]})
    y, v = np.array(BCG["yi"]), np.array(BCG["vi"])
    s = models.subgroups(y, v, df["alloc"], tau2_model="pooled", test="knha", measure="generic")
    r = models.meta_regression(y, v, df, "~ alloc", test="knha", measure="generic")
    assert s.q_between == pytest.approx(r.qm) and s.q_between_df2 == r.qm_df2 == 10
    assert all(g.tau2 == pytest.approx(r.tau2, rel=RTOL_BATCH) for g in s.subgroups)


def test_subgroups_need_two_levels():
    with pytest.raises(ModelError, match="subgroups: 'group' has 1 level\\(s\\); need at least 2"):
        models.subgroups([0.1, 0.2], [0.01, 0.02], ["a", "a"])


# --- the pool command ----------------------------------------------------------------------------

@pytest.fixture
def bcg_csv(tmp_path):
    path = tmp_path / "bcg.csv"
    pd.DataFrame({"study": BCG["labels"], "yi": BCG["yi"], "vi": BCG["vi"],
                  "alloc": BCG["data"]["alloc"], "ablat": BCG["data"]["ablat"]}).to_csv(path, index=False)
    return path


def _cli(args, capsys):
    from metaalliance.cli import main
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_pool_json_matches_metafor(bcg_csv, capsys):
    code, out, _ = _cli(["pool", "--data", str(bcg_csv), "--yi", "yi", "--vi", "vi", "--json",
                         "--method", "PM", "--test", "knha"], capsys)
    assert code == 0
    d = json.loads(out)
    # the command line's default control is metafor's: plain rma() numbers
    ref = next(e for e in REF["fits_default"] if e["dataset"] == "bcg" and e["method"] == "PM"
               and e["test"] == "knha")
    assert list(d) == POOL_KEYS[:-1] and d["measure"] == "generic" and d["omitted"] == 0
    for key in ("estimate", "se", "tau2", "i2", "q", "pi_lower", "tau2_ci_upper"):
        assert d[key] == pytest.approx(ref[key], rel=RTOL)


def test_pool_mods_and_by(bcg_csv, capsys):
    code, out, _ = _cli(["pool", "--data", str(bcg_csv), "--yi", "yi", "--vi", "vi", "--json",
                         "--mods", "~ alloc + ablat"], capsys)
    d = json.loads(out)
    ref = next(e for e in REF["metareg_default"] if e["dataset"] == "bcg"
               and e["method"] == "REML" and e["test"] == "z")
    assert code == 0 and [c["name"] for c in d["coefficients"]] == [c["name"] for c in ref["coefficients"]]
    assert d["qm"] == pytest.approx(ref["qm"], rel=RTOL) and d["r2"] == pytest.approx(ref["r2"], rel=RTOL)
    code, out, _ = _cli(["pool", "--data", str(bcg_csv), "--yi", "yi", "--vi", "vi", "--json",
                         "--by", "alloc"], capsys)
    d = json.loads(out)
    ref = next(e for e in REF["subgroups_default"] if e["dataset"] == "bcg"
               and e["method"] == "REML" and e["test"] == "z" and e["tau2_model"] == "separate")
    assert code == 0 and d["by"] == "alloc" and d["q_between"] == pytest.approx(ref["q_between"], rel=RTOL)
    code, out, _ = _cli(["pool", "--data", str(bcg_csv), "--yi", "yi", "--vi", "vi", "--json",
                         "--by", "alloc", "--control", "optimum"], capsys)
    ref = next(e for e in REF["subgroups"] if e["dataset"] == "bcg" and e["method"] == "REML"
               and e["test"] == "z" and e["tau2_model"] == "separate")
    assert json.loads(out)["q_between"] == pytest.approx(ref["q_between"], rel=RTOL)
    code, out, _ = _cli(["pool", "--data", str(bcg_csv), "--yi", "yi", "--vi", "vi",
                         "--mods", "~ ablat", "--permutations", "50", "--seed", "1"], capsys)
    assert code == 0 and "Permutation p-val of QM (50 permutations, seed 1)" in out


def test_pool_option_errors(bcg_csv, capsys):
    base = ["pool", "--data", str(bcg_csv), "--yi", "yi", "--vi", "vi"]
    code, _, err = _cli(base + ["--by", "alloc", "--mods", "~ ablat"], capsys)
    assert code == 1 and err.startswith("error: --by and --mods: use one")
    # --permutations without --mods is the intercept-only test (sign flips), as permutest()
    code, _, err = _cli(base + ["--by", "alloc", "--permutations", "10"], capsys)
    assert code == 1 and err.strip() == ("error: --permutations cannot be combined with --by, "
                                         "--cluster or --aggregate (permutest() is for rma.uni "
                                         "models)")
    code, _, err = _cli(base + ["--mods", "~ nothere"], capsys)
    assert code == 1 and err.startswith("error: ") and "no column 'nothere'" in err


def test_docstring_examples_run():
    """Docstring examples are doctests (their numbers checked against metafor by hand:
    rma(c(.1, .3, .35, .6), c(.01, .02, .015, .03), method = "DL") gives 0.3089 and 0.0224)."""
    import doctest

    from metaalliance.engine import estimators
    from metaalliance.engine import inference
    from metaalliance.engine import results
    for module in (models, estimators, inference, results):
        assert doctest.testmod(module).failed == 0, module.__name__


# --- control: metafor's default stopping rules, and what happens where metafor stops ------------

def _divergent():
    """The near-saturated design of test_divergent_fisher_scoring_is_rescued (simulated)."""
    rng = np.random.default_rng(1810)
    k = 10
    X = np.column_stack([np.ones(k), np.eye(k)[:, :3], rng.normal(size=k)])
    v = rng.uniform(0.005, 0.05, k)
    y = rng.normal(0, 0.15, k)
    return y, v, X


def test_metafor_control_stops_where_metafor_stops():
    """Under control "metafor" tau^2 stops short of the optimum as metafor's default does:
    within the threshold for Fisher scoring, within uniroot's tol for PM (molloy2014:
    rma(yi, vi) gives 0.00811050, the REML optimum is 0.00810956)."""
    ref = next(e for e in REF["fits_default"] if e["dataset"] == "molloy2014"
               and e["method"] == "REML" and e["test"] == "z")
    mf = models.random_effects(MOLLOY_Y, MOLLOY_V)
    opt = models.random_effects(MOLLOY_Y, MOLLOY_V, control="optimum")
    assert mf.tau2 == pytest.approx(ref["tau2"], rel=1e-12)
    assert 1e-7 < abs(mf.tau2 - opt.tau2) < est.MF_THRESHOLD
    assert (mf.control, opt.control) == ("metafor", "optimum")
    assert (mf.provenance["control"], opt.provenance["control"]) == ("metafor", "optimum")
    for method in ("ML", "REML", "EB", "PM"):
        a = est.tau2_fit(MOLLOY_Y, MOLLOY_V, method)
        b = est.tau2_fit(MOLLOY_Y, MOLLOY_V, method, control="optimum")
        assert a.converged[0] and not a.safeguarded[0]
        assert abs(a.tau2[0] - b.tau2[0]) < (est.MF_TOL if method == "PM" else 1e-4)


def test_fisher_scoring_that_metafor_cannot_finish_falls_back_and_says_so():
    """metafor stops this fit with "Fisher scoring algorithm did not converge" (checked with R
    3.8.1 on these simulated numbers; with control = list(stepadj = 0.5) metafor reaches
    tau^2 = 0.001487606959). Under control "metafor" we warn, take the REML optimum (as
    control "optimum") and say so in the result."""
    y, v, X = _divergent()
    with pytest.warns(MetaAllianceWarning, match="REML: metafor's Fisher scoring does not "
                                                 "converge within 100 iterations"):
        res = models.meta_regression_matrix(y, v, X, measure="generic")
    opt = models.meta_regression_matrix(y, v, X, measure="generic", control="optimum")
    assert res.tau2 == pytest.approx(0.001487606959, rel=1e-9)
    assert res.tau2 == pytest.approx(opt.tau2, rel=1e-12)
    assert res.converged and res.method_used == "REML" and opt.fallback is None
    assert "Fisher scoring algorithm did not converge" in res.fallback
    assert res.to_dict()["fallback"] == res.fallback == res.provenance["fallback"]
    assert f"Note: {res.fallback}." in res.summary()
    fit = est.tau2_fit(y, v, "REML", X=X)
    assert fit.safeguarded[0] and fit.converged[0]


def test_pm_beyond_metafor_tau2_max_falls_back_and_says_so():
    """dat.normand1999 with some effects' signs flipped: rma(yi, vi, method = "PM") stops with
    "Value of 'tau2.max' too low" (R: tau2.max = max(100, 10 mad(yi)^2) = 791.31699359999993,
    root 981.0). We warn, take the PM root beyond it and say so."""
    ds = REF["datasets"]["normand1999"]
    signs = np.array([-1, -1, -1, 1, 1, 1, 1, -1, 1])
    y, v = signs * np.array(ds["yi"]), np.array(ds["vi"])
    assert est.rma_tau2_max(y)[0] == 791.31699359999993
    with pytest.warns(MetaAllianceWarning, match="Value of 'tau2.max' too low"):
        res = models.random_effects(y, v, method="PM", measure="generic")
    opt = models.random_effects(y, v, method="PM", measure="generic", control="optimum")
    assert res.tau2 == pytest.approx(opt.tau2, rel=1e-12) and res.tau2 > 791.32
    assert res.converged and res.fallback and res.to_dict()["fallback"] == res.fallback
    # the batch path (permutest's refits) flags the same fit
    fit = est.tau2_fit(np.column_stack([y, np.array(ds["yi"])]), v, "PM")
    assert list(fit.safeguarded) == [True, False]


def test_r_mad_and_tau2_max():
    """R's mad() (median of |y - median|, times 1.4826; even n: mean of the middle two) and
    rma.uni's tau2.max = max(100, 10 mad^2) per column, over masked rows."""
    y = np.array([3.0, -20.0, 7.5, 40.0, 1.0, -2.0])
    assert est.r_mad(y)[0] == 1.4826 * np.median(np.abs(y - np.median(y)))
    M = np.array([[1, 1], [1, 0], [1, 1], [1, 1], [1, 0], [0, 1]], dtype=bool)
    got = est.rma_tau2_max(np.column_stack([y, y]), M)
    for j in range(2):
        sub = y[M[:, j]]
        mad = 1.4826 * np.median(np.abs(sub - np.median(sub)))
        assert got[j] == max(100.0, 10 * mad * mad)
    assert est.rma_tau2_max(np.array([0.1, 0.5, -0.2]))[0] == 100.0


def test_cli_control_flag(tmp_path, capsys):
    """--control metafor (the default) / optimum on the command line."""
    from metaalliance.cli import main
    ref_mf = next(e for e in REF["fits_default"] if e["dataset"] == "molloy2014"
                  and e["method"] == "PM" and e["test"] == "z")
    ref_opt = next(e for e in REF["fits"] if e["dataset"] == "molloy2014"
                   and e["method"] == "PM" and e["test"] == "z")
    csv = tmp_path / "m.csv"
    csv.write_text("yi,vi\n" + "".join(f"{float(y)!r},{float(v)!r}\n"
                                        for y, v in zip(MOLLOY_Y, MOLLOY_V)))
    base = ["pool", "--data", str(csv), "--yi", "yi", "--vi", "vi"]
    for flag, ref in (([], ref_mf), (["--control", "metafor"], ref_mf),
                      (["--control", "optimum"], ref_opt)):
        assert main(base + ["--method", "PM", "--json", *flag]) == 0
        out = json.loads(capsys.readouterr().out)
        for key in ("tau2", "tau2_ci_lower", "tau2_ci_upper", "i2", "pi_lower"):
            assert out[key] == pytest.approx(ref[key], rel=1e-6), (flag, key)
    with pytest.raises(SystemExit):
        main(base + ["--control", "exact"])
    assert "invalid choice: 'exact'" in capsys.readouterr().err
