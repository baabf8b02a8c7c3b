"""metafor reference tests of the univariate engine.

The numbers come from tests/reference/univariate.R (R and metafor versions are in the JSON:
``r_version``, ``metafor_version``), which fits public datasets from metadat:

- dat.molloy2014, dat.mcdaniel1994, dat.craft2003 (correlations, escalc(measure = "ZCOR"))
- dat.bcg (log risk ratios) and dat.normand1999 (mean differences)
- dat.bangertdrowns2004, dat.kalaian1996 (verbal rows; standardized mean differences) and
  dat.hackshaw1998 (log odds ratios)

Each test names the metafor call it reproduces. Every analysis is compared twice, both at the
contract's 1e-6:

- with metafor's plain calls (its default control: Fisher scoring stops at |change| <= 1e-5,
  uniroot(tol = eps^0.25) for PM and confint), against ``control="metafor"`` (the default),
  which stops exactly where metafor stops (``*_default`` entries, ``test_metafor_defaults_*``);
- with metafor run to its optimum (``control = list(threshold = 1e-10, tol = 1e-12)``,
  confint ``tol = 1e-12``), against ``control="optimum"``.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metaalliance.engine import models

REF = json.loads((Path(__file__).parent / "reference" / "univariate.json").read_text())

#: the contract's tolerance for numbers compared with metafor
RTOL = 1e-6
#: absolute floor for quantities that are 0 at the optimum: metafor run with threshold 1e-10
#: stops Fisher scoring up to ~1e-10 above a boundary optimum tau2 = 0 (we reach 0 exactly)
#: (tight references only: under its default control we stop where metafor stops)
ATOL_TAU2 = 1e-9
#: absolute floor for everything else (p-values of 1e-13, I^2 of 0 ...): far below printing
ATOL = 1e-12
#: I^2 = 100 tau2 / (vt + tau2) in percent: the ATOL_TAU2 floor of tau2 at a boundary optimum
#: becomes 100 * 1e-9 / vt, up to ~1e-5 percentage points for vt ~ 1e-2 (tight references)
ATOL_I2 = 1e-5

#: which control each set of reference entries is compared with
TIGHT, DEFAULT = "optimum", "metafor"

DATASETS = REF["datasets"]


def _list(x):
    return x if isinstance(x, list) else [x]


def data_frame(name):
    ds = DATASETS[name]
    return pd.DataFrame({k: _list(v) for k, v in ds["data"].items()})


def yv(name):
    ds = DATASETS[name]
    return np.array(ds["yi"], dtype=float), np.array(ds["vi"], dtype=float), ds["measure"]


def close(ours, ref, rtol=RTOL, atol=ATOL):
    if ref is None:
        return ours is None
    return ours is not None and math.isclose(ours, ref, rel_tol=rtol, abs_tol=atol)


def rel_diff(ours, ref):
    """|ours - ref| / |ref| (absolute difference when ref == 0)."""
    if ours is None or ref is None:
        return 0.0 if ours is ref else math.inf
    d = abs(ours - ref)
    return d / abs(ref) if ref != 0 else d


# --- what we compute for each kind of reference entry ------------------------------------------

FIT_KEYS = ("estimate", "se", "stat", "pvalue", "ci_lower", "ci_upper", "pi_lower", "pi_upper",
            "tau2", "se_tau2", "q", "q_pvalue", "i2", "h2", "vt", "tau2_ci_lower",
            "tau2_ci_upper", "i2_ci_lower", "i2_ci_upper", "h2_ci_lower", "h2_ci_upper")


def ours_fit(entry, control=TIGHT):
    y, v, measure = yv(entry["dataset"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = models.random_effects(y, v, method=entry["method"], test=entry["test"],
                                    measure=measure, control=control)
    return res, {key: getattr(res, key) for key in FIT_KEYS}


def ref_fit(entry, fits=None):
    """Reference values of a fit entry, with the two documented EE substitutions:
    metafor's predict() gives no PI for an EE model (ours: PI = CI, tau2 = 0) and confint()
    refuses EE models (ours: the Q-profile CI, which does not depend on the estimator; compared
    with the same dataset's DL entry)."""
    ref = {key: entry.get(key) for key in FIT_KEYS}
    if entry["method"] == "EE":
        ref["pi_lower"], ref["pi_upper"] = entry["ci_lower"], entry["ci_upper"]
        fits = fits or REF["fits"]
        dl = next(e for e in fits if e["dataset"] == entry["dataset"]
                  and e["method"] == "DL" and e["test"] == entry["test"])
        upper_end = max(100.0, 10 * dl["tau2"])
        for bound in ("lower", "upper"):
            if (math.isclose(dl[f"tau2_ci_{bound}"], upper_end, rel_tol=1e-12)
                    or (fits is REF["fits_default"] and upper_end != 100.0)):
                # metafor reports its search end max(100, 10 tau2) when the root lies beyond;
                # that end depends on DL's tau2, so there is nothing to compare EE with.
                # Under the default control the interval also sets uniroot's path: our EE
                # interval is confint()'s for tau2 = 0, [0, 100], DL's differs if 10 tau2 > 100
                for q in ("tau2", "i2", "h2"):
                    del ref[f"{q}_ci_{bound}"]
                continue
            for q in ("tau2", "i2", "h2"):
                ref[f"{q}_ci_{bound}"] = dl[f"{q}_ci_{bound}"]
    return ref


REG_KEYS = ("tau2", "se_tau2", "qm", "qm_pvalue", "qe", "qe_pvalue", "i2", "h2", "r2",
            "tau2_ci_lower", "tau2_ci_upper")
COEF_KEYS = ("estimate", "se", "stat", "pvalue", "ci_lower", "ci_upper")


def ours_reg(entry, control=TIGHT):
    y, v, measure = yv(entry["dataset"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = models.meta_regression(y, v, data_frame(entry["dataset"]), entry["formula"],
                                     method=entry["method"], test=entry["test"],
                                     measure=measure, control=control)
    vals = {key: getattr(res, key) for key in REG_KEYS}
    if entry["method"] == "EE":          # metafor's confint() refuses EE models
        vals["tau2_ci_lower"] = vals["tau2_ci_upper"] = None
    for c in res.coefficients:
        for key in COEF_KEYS:
            vals[f"{c.name}.{key}"] = getattr(c, key)
    return res, vals


def ref_reg(entry):
    ref = {key: entry.get(key) for key in REG_KEYS}
    for c in entry["coefficients"]:
        for key in COEF_KEYS:
            ref[f"{c['name']}.{key}"] = c[key]
    return ref


SUB_KEYS = ("estimate", "se", "ci_lower", "ci_upper", "tau2")


def ours_sub(entry, control=TIGHT):
    y, v, measure = yv(entry["dataset"])
    g = data_frame(entry["dataset"])[entry["by"]].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = models.subgroups(y, v, g, method=entry["method"], test=entry["test"],
                               tau2_model=entry["tau2_model"], measure=measure, by=entry["by"],
                               control=control)
    vals = {"q_between": res.q_between, "q_between_pvalue": res.q_between_pvalue}
    for s in res.subgroups:
        for key in SUB_KEYS:
            vals[f"{s.level}.{key}"] = getattr(s, key)
    return res, vals


def ref_sub(entry):
    ref = {"q_between": entry["q_between"], "q_between_pvalue": entry["q_between_pvalue"]}
    for s in entry["subgroups"]:
        for key in SUB_KEYS:
            ref[f"{s['level']}.{key}"] = s[key]
    return ref


def mismatches(ours, ref, rtol=RTOL, atol_tau2=ATOL_TAU2):
    out = []
    for key, r in ref.items():
        o = ours.get(key)
        atol = atol_tau2 if ("tau2" in key and "se_tau2" not in key) else ATOL
        if key == "i2":
            atol = ATOL_I2
        if not close(o, r, rtol, atol):
            out.append(f"{key}: ours {o!r} metafor {r!r}")
    return out


def _id(e):
    return "-".join(str(e[k]) for k in ("dataset", "formula", "by", "tau2_model", "method", "test")
                    if k in e and e[k] is not None)


# --- tests ---------------------------------------------------------------------------------------

def test_reference_provenance():
    """The JSON says which R and metafor produced it."""
    assert REF["r_version"].startswith("R version")
    assert REF["metafor_version"]
    assert set(DATASETS) == {"molloy2014", "mcdaniel1994", "craft2003", "bcg", "normand1999",
                             "bangertdrowns2004", "hackshaw1998", "kalaian1996"}
    for tight, default in (("fits", "fits_default"), ("metareg", "metareg_default")):
        assert len(REF[tight]) == len(REF[default])


@pytest.mark.parametrize("entry", REF["fits"], ids=_id)
def test_random_effects_matches_metafor(entry):
    """rma(yi, vi, method, test, control = tight) + predict() + confint(control = tight) for
    every method x test, against control = "optimum"."""
    res, ours = ours_fit(entry)
    assert mismatches(ours, ref_fit(entry)) == []
    assert res.k == len(DATASETS[entry["dataset"]]["yi"])
    assert res.q_df == entry["q_df"]
    assert res.df == entry["df"]
    assert res.converged and res.method_used == entry["method"]
    if entry["method"] == "EE":
        assert res.se_tau2 is None and entry["se_tau2"] is None


@pytest.mark.parametrize("entry", REF["fits_default"], ids=_id)
def test_metafor_defaults_within_their_stopping_rule(entry):
    """Plain rma(yi, vi, method, test) + predict() + confint(), metafor's default control,
    against control = "metafor" (the default), which stops where metafor stops: 1e-6, with
    the tight floors only for p-values and I^2 ~ 0 (ATOL)."""
    res, ours = ours_fit(entry, DEFAULT)
    ref = ref_fit(entry, REF["fits_default"])
    assert mismatches(ours, ref, RTOL, ATOL) == []
    assert res.converged and res.fallback is None and res.control == "metafor"


def test_metafor_is_the_default_control():
    """random_effects() without control= is control = "metafor" (plain rma() numbers)."""
    entry = next(e for e in REF["fits_default"]
                 if e["dataset"] == "molloy2014" and e["method"] == "REML" and e["test"] == "z")
    y, v, measure = yv("molloy2014")
    res = models.random_effects(y, v, measure=measure)
    assert res.tau2 == pytest.approx(entry["tau2"], rel=RTOL)
    assert res.provenance["control"] == "metafor"


def _check_reg(res, entry):
    assert [c.name for c in res.coefficients] == [c["name"] for c in entry["coefficients"]]
    assert res.k == entry["k"]
    assert res.qm_df == entry["qm_df"] and res.qe_df == entry["qe_df"]
    assert res.qm_df2 == entry.get("qm_df2")


@pytest.mark.parametrize("entry", REF["metareg"], ids=_id)
def test_meta_regression_matches_metafor(entry):
    """rma(yi, vi, mods = formula, data, method, test): coefficients, QM, QE, R^2 ..."""
    res, ours = ours_reg(entry)
    _check_reg(res, entry)
    assert mismatches(ours, ref_reg(entry)) == []


@pytest.mark.parametrize("entry", REF["metareg_default"], ids=_id)
def test_meta_regression_matches_metafor_defaults(entry):
    """Plain rma(yi, vi, mods = formula, data, method, test) + confint(), against
    control = "metafor"."""
    res, ours = ours_reg(entry, DEFAULT)
    _check_reg(res, entry)
    assert mismatches(ours, ref_reg(entry), RTOL, ATOL) == []
    assert res.converged and res.fallback is None


def _check_sub(res, entry):
    assert [s.level for s in res.subgroups] == [s["level"] for s in entry["subgroups"]]
    assert [s.k for s in res.subgroups] == [s["k"] for s in entry["subgroups"]]
    assert res.q_between_df == entry["q_between_df"]
    assert res.q_between_df2 == entry.get("q_between_df2")


@pytest.mark.parametrize("entry", REF["subgroups"], ids=_id)
def test_subgroups_match_metafor(entry):
    """separate: rma(subset = g == level) per level and rma(est, sei, mods = ~ level, "EE")$QM;
    pooled: rma(mods = ~ g)$QM and the coefficients of rma(mods = ~ g - 1)."""
    res, ours = ours_sub(entry)
    _check_sub(res, entry)
    assert mismatches(ours, ref_sub(entry)) == []


@pytest.mark.parametrize("entry", REF["subgroups_default"], ids=_id)
def test_subgroups_match_metafor_defaults(entry):
    """The subgroup analyses of metafor's plain calls, against control = "metafor"."""
    res, ours = ours_sub(entry, DEFAULT)
    _check_sub(res, entry)
    assert mismatches(ours, ref_sub(entry), RTOL, ATOL) == []


PERM_EXACT = [e for e in REF["permutest"] if e["exact"]]
PERM_RANDOM = [e for e in REF["permutest"] if not e["exact"]]


def _perm(entry, permutations, seed=None, exact=False, control=TIGHT):
    y, v, measure = yv(entry["dataset"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if entry["formula"] is None:
            X = np.ones((y.size, 1))
            return models.meta_regression_matrix(y, v, X, ["intrcpt"], method=entry["method"],
                                                 test=entry["test"], permutations=permutations,
                                                 seed=seed, exact=exact, measure=measure,
                                                 control=control)
        return models.meta_regression(y, v, data_frame(entry["dataset"]), entry["formula"],
                                      method=entry["method"], test=entry["test"],
                                      permutations=permutations, seed=seed, exact=exact,
                                      measure=measure, control=control)


PERM_DEFAULT = REF["permutest_default"]


@pytest.mark.parametrize("entry, control",
                         [(e, TIGHT) for e in PERM_EXACT] + [(e, DEFAULT) for e in PERM_DEFAULT],
                         ids=[f"{_id(e)}-tight" for e in PERM_EXACT]
                         + [f"{_id(e)}-default" for e in PERM_DEFAULT])
def test_exact_permutation_test_matches_metafor(entry, control):
    """permutest(res, exact = TRUE): every distinct permutation (sign flips for intercept-only
    models), so the p-values are deterministic and must agree exactly; under both controls
    (permutest refits with the model's control). Refits that fail in metafor (PM under the
    default control where the root lies beyond tau2.max = max(100, 10 mad(yi)^2)) are skipped
    there and here: the same ones."""
    res = _perm(entry, permutations=2, exact=True, control=control)
    assert (res.permutations_failed or 0) == entry["n_failed"]
    assert res.permutation_exact and res.permutations == entry["n_permutations"]
    assert [c.name for c in res.coefficients] == _list(entry["names"])
    for c, p in zip(res.coefficients, _list(entry["pvalues"])):
        assert c.perm_pvalue == pytest.approx(p, rel=RTOL, abs=ATOL)
    assert res.perm_qm_pvalue == pytest.approx(entry["qm_pvalue"], rel=RTOL, abs=ATOL)


def test_exact_permutation_chosen_automatically_when_enough_iterations():
    """permutest switches to the exact test when #distinct permutations <= iter (84 here)."""
    entry = next(e for e in PERM_EXACT if e["dataset"] == "craft2003" and e["formula"])
    res = _perm(entry, permutations=1000, seed=1)
    assert res.permutation_exact and res.permutations == 84
    assert res.perm_qm_pvalue == pytest.approx(entry["qm_pvalue"], rel=RTOL)


#: random permutation p-values: R's and numpy's generators draw different permutations, so
#: the two p-values are two independent estimates of the same exact p-value; each has
#: sd <= sqrt(p (1 - p) / 1000), so they may differ by up to ~4.5 * sqrt(2) * sd.
PERM_RANDOM_SDS = 4.5


@pytest.mark.parametrize("entry", PERM_RANDOM, ids=_id)
def test_random_permutation_test_agrees_in_distribution(entry):
    """permutest(res, iter = 1000, seed = 1234): compared loosely (different RNG)."""
    res = _perm(entry, permutations=entry["iter"], seed=entry["seed"])
    assert not res.permutation_exact and res.permutations == entry["iter"]
    n = entry["iter"]
    pairs = [(c.perm_pvalue, p) for c, p in zip(res.coefficients, _list(entry["pvalues"]))]
    pairs.append((res.perm_qm_pvalue, entry["qm_pvalue"]))
    for ours, ref in pairs:
        p = max((ours + ref) / 2, 1 / n)
        sd = math.sqrt(2 * p * (1 - p) / n)
        assert abs(ours - ref) <= PERM_RANDOM_SDS * sd + 1 / n, (ours, ref)
        assert ours >= 1 / n       # the observed data are one of the permutations


def test_design_matrix_names_as_metafor():
    """factor() coding: sorted levels, first is the reference, names 'columnlevel'."""
    X, names, keep = models.design_matrix(data_frame("bcg"), "~ alloc + ablat")
    assert names == ["intrcpt", "allocrandom", "allocsystematic", "ablat"]
    assert keep.all() and X.shape == (13, 4)
