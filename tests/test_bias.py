"""Publication-bias analyses against metafor 3.8.1 (tests/reference/bias_sensitivity.R writes
the values), plus properties, messages, and the funnel/GOSH/Baujat figures.

Reference datasets (metadat): dat.molloy2014 (Fisher z), dat.bcg (log RR), dat.hackshaw1998
(log OR, k = 37), dat.pritz1997 (logit proportions), each fitted with several (method, test)
settings. Each test names the metafor call it reproduces.
"""

import json
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from metaalliance.analyses import bias
from metaalliance.engine import models
from metaalliance.figures import bias_plots as plots_bias
from metaalliance.analyses import sensitivity
from metaalliance.errors import DataError, ModelError, OptionError

REF = json.loads((Path(__file__).parent / "reference" / "bias_sensitivity.json").read_text())

#: the project's tolerance for agreement with metafor
RTOL = 1e-6
#: tau^2 at a boundary optimum of 0: metafor stops a hair above 0 (see
#: test_sensitivity.TAU2_ATOL); absolute tolerance on the effect-size scale squared
TAU2_ATOL = 1e-10
#: I^2 (percent) inherits that difference
I2_ATOL = 1e-8

CASES = [(name, model) for name, ds in REF["datasets"].items() for model in ds["models"]]
DATASETS = list(REF["datasets"])


#: bias_sensitivity.R runs metafor to (nearly) its optimum (ctrl_for), so the fits and their
#: refits use control = "optimum" (refits take the fit's control); metafor's default control
#: is compared in test_*_matches_metafor_defaults (the "default" references)
TIGHT = "optimum"


def fit_for(name, model=None, control=TIGHT):
    ds = REF["datasets"][name]
    m = ds["models"][model] if model else {"method": "REML", "test": "z"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return models.random_effects(ds["yi"], ds["vi"], method=m["method"], test=m["test"],
                                     labels=ds["labels"], measure="generic", control=control)


def approx(x, atol=0.0):
    return pytest.approx(x, rel=RTOL, abs=atol)


@pytest.mark.parametrize("name,model", CASES)
def test_egger_matches_metafor_regtest(name, model):
    """regtest(rma(yi, vi, method, test)): model = "rma", predictor = "sei"."""
    ref = REF["datasets"][name]["models"][model]["regtest"]
    res = bias.egger_test(fit_for(name, model))
    assert res.stat == approx(ref["stat"])
    assert res.pvalue == approx(ref["pvalue"])
    assert res.df == ref["df"]
    assert res.limit_estimate == approx(ref["limit_estimate"])
    assert res.limit_ci_lower == approx(ref["limit_ci_lower"])
    assert res.limit_ci_upper == approx(ref["limit_ci_upper"])


@pytest.mark.parametrize("name,model", CASES)
def test_rank_test_matches_metafor_ranktest(name, model):
    """ranktest(rma(...)): exact p without ties (bcg, hackshaw, pritz), normal approximation
    with ties (molloy: two studies share n)."""
    ref = REF["datasets"][name]["models"][model]["ranktest"]
    res = bias.rank_test(fit_for(name, model))
    assert res.tau == approx(ref["tau"])
    assert res.pvalue == approx(ref["pvalue"])
    assert res.ties is ref["ties"] and res.exact is (not ref["ties"])


@pytest.mark.parametrize("estimator", ["L0", "R0"])
@pytest.mark.parametrize("name,model", CASES)
def test_trim_and_fill_matches_metafor_trimfill(name, model, estimator):
    """trimfill(rma(...), estimator): k0, its SE (and p for R0), side, filled studies, refit."""
    ref = REF["datasets"][name]["models"][model][f"trimfill_{estimator}"]
    _check_trimfill(bias.trim_and_fill(fit_for(name, model), estimator=estimator), ref,
                    estimator)


def _check_trimfill(res, ref, estimator):
    assert (res.k0, res.side) == (ref["k0"], ref["side"])
    assert res.se_k0 == approx(ref["se_k0"])
    if estimator == "R0":
        assert res.p_k0 == approx(ref["p_k0"])
    else:
        assert res.p_k0 is None and ref["p_k0"] is None
    np.testing.assert_allclose(res.filled_yi, ref["filled_yi"], rtol=RTOL)
    np.testing.assert_allclose(res.filled_vi, ref["filled_vi"], rtol=RTOL)
    f = res.fit
    assert f.k == ref["k"]
    for ours, theirs in (("estimate", "estimate"), ("se", "se"), ("stat", "stat"),
                         ("pvalue", "pvalue"), ("ci_lower", "ci_lower"),
                         ("ci_upper", "ci_upper"), ("q", "q"), ("i2", "i2")):
        assert getattr(f, ours) == approx(ref[theirs], atol=I2_ATOL if ours == "i2" else 0), ours
    assert f.tau2 == approx(ref["tau2"], atol=TAU2_ATOL)


# --- metafor's default control: plain rma() calls -----------------------------------------------

DEFAULT = REF["default"]["datasets"]
DEFAULT_CASES = [(name, model) for name, ms in DEFAULT.items() for model in ms]


def default_fit(name, model):
    """models.random_effects without control=: metafor's default control, as rma()."""
    ds = REF["datasets"][name]
    m = DEFAULT[name][model]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return models.random_effects(ds["yi"], ds["vi"], method=m["method"], test=m["test"],
                                     labels=ds["labels"], measure="generic")


@pytest.mark.parametrize("name,model", DEFAULT_CASES)
def test_egger_matches_metafor_defaults(name, model):
    """regtest() of a plain rma() (its refit keeps the default control, x$control), against
    the default control = "metafor"."""
    ref = DEFAULT[name][model]["regtest"]
    res = bias.egger_test(default_fit(name, model))
    for key in ("stat", "pvalue", "limit_estimate", "limit_ci_lower", "limit_ci_upper"):
        assert getattr(res, key) == approx(ref[key]), key
    assert res.df == ref["df"]


@pytest.mark.parametrize("estimator", ["L0", "R0"])
@pytest.mark.parametrize("name,model", DEFAULT_CASES)
def test_trim_and_fill_matches_metafor_defaults(name, model, estimator):
    """trimfill() of a plain rma() (its refits: metafor's default control), against the default
    control = "metafor"."""
    ref = DEFAULT[name][model][f"trimfill_{estimator}"]
    _check_trimfill(bias.trim_and_fill(default_fit(name, model), estimator=estimator), ref,
                    estimator)


def test_trim_and_fill_reference_covers_both_sides_and_estimators():
    seen = {(REF["datasets"][n]["models"][m][f"trimfill_{e}"]["side"],
             REF["datasets"][n]["models"][m][f"trimfill_{e}"]["k0"] > 0)
            for n, m in CASES for e in ("L0", "R0")}
    assert {("left", True), ("right", True), ("left", False), ("right", False)} <= seen


@pytest.mark.parametrize("name", DATASETS)
def test_pet_and_peese_match_lm_and_regtest_lm(name):
    """PET = lm(yi ~ sqrt(vi), weights = 1/vi), PEESE = lm(yi ~ vi, weights = 1/vi); their slope
    t-tests are regtest(yi, vi, model = "lm", predictor = "sei" | "vi")."""
    ds = REF["datasets"][name]
    res = bias.pet_peese(fit_for(name))
    for line, key in ((res.pet, "regtest_lm_sei"), (res.peese, "regtest_lm_vi")):
        ref = ds[key]
        for col in ("intercept", "intercept_se", "intercept_t", "intercept_pvalue",
                    "intercept_ci_lower", "intercept_ci_upper", "slope", "slope_se",
                    "slope_t", "slope_pvalue"):
            assert getattr(line, col) == approx(ref[col]), (key, col)
        assert line.slope_t == approx(ref["stat"]) and line.df == ref["df"]
        assert line.intercept == approx(ref["limit_estimate"])


def test_pet_peese_rule():
    """One-sided PET test in the direction of the pooled estimate; PEESE when it rejects."""
    for name in DATASETS:
        fit = fit_for(name)
        res = bias.pet_peese(fit)
        t, df = res.pet.intercept_t, res.pet.df
        from scipy import stats
        expect = stats.t.sf(t, df) if fit.estimate >= 0 else stats.t.cdf(t, df)
        assert res.pet_pvalue_one_sided == pytest.approx(expect, rel=1e-12)
        chosen = res.peese if res.pet_pvalue_one_sided < 0.05 else res.pet
        assert res.selected == ("PEESE" if chosen is res.peese else "PET")
        assert res.estimate == chosen.intercept
    # no reference dataset has a significant PET intercept (all select PET); a simulated one
    # with a true effect of .3 and no selection does
    assert {bias.pet_peese(fit_for(n)).selected for n in DATASETS} == {"PET"}
    rng = np.random.default_rng(11)
    n = rng.integers(30, 300, 40)
    yi = rng.normal(0.3, 1 / np.sqrt(n - 3))
    res = bias.pet_peese(models.random_effects(yi, 1 / (n - 3), measure="ZCOR"))
    assert res.selected == "PEESE" and res.pet_pvalue_one_sided < 0.05
    assert res.estimate == res.peese.intercept and res.direction == "greater"


@pytest.mark.parametrize("name", DATASETS)
def test_fail_safe_n_matches_metafor_fsn(name):
    """fsn(yi, vi, type = "Rosenthal" | "Orwin" | "Rosenberg") with their defaults."""
    ref = REF["datasets"][name]["failsafe_n"]
    res = bias.fail_safe_n(fit_for(name))
    assert res.rosenthal == ref["rosenthal"]["n"]
    assert res.rosenthal_pvalue == approx(ref["rosenthal"]["pvalue"])
    assert res.orwin == ref["orwin"]["n"]
    assert res.orwin_mean == approx(ref["orwin"]["mean"])
    assert res.orwin_target == approx(ref["orwin"]["target"])
    assert res.rosenberg == ref["rosenberg"]["n"]
    assert res.rosenberg_pvalue == approx(ref["rosenberg"]["pvalue"])
    assert res.rosenberg_mean == approx(ref["rosenberg"]["mean"])


def test_fail_safe_n_orwin_target():
    fit = fit_for("molloy2014")
    k, mean = fit.k, float(np.mean(fit.yi))
    res = bias.fail_safe_n(fit, target=0.05)
    assert res.orwin == math.ceil(k * (mean - 0.05) / 0.05)
    assert bias.fail_safe_n(fit, target=-0.05).orwin_target == 0.05   # sign follows the mean
    assert bias.fail_safe_n(fit, target=0).orwin is None               # metafor: Inf


# --- Kendall's exact distribution ---------------------------------------------------------------

def test_kendall_exact_cdf_small_n_by_hand():
    # inversions of permutations of 4: counts 1, 3, 5, 6, 5, 3, 1 over 24
    counts = [1, 3, 5, 6, 5, 3, 1]
    for q in range(7):
        assert bias.kendall_exact_cdf(q, 4) == pytest.approx(sum(counts[:q + 1]) / 24, rel=1e-14)
    assert bias.kendall_exact_cdf(-1, 4) == 0 and bias.kendall_exact_cdf(6, 4) == 1


def test_kendall_exact_cdf_large_n_is_finite_and_symmetric():
    """R's pkendall divides by gamma(n + 1), infinite for n > 170; ours does not overflow."""
    n = 300
    total = n * (n - 1) // 2
    lower = bias.kendall_exact_cdf(total // 2 - 2000, n)
    upper = 1 - bias.kendall_exact_cdf(total - (total // 2 - 2000) - 1, n)
    assert 0 < lower < 0.05 and lower == pytest.approx(upper, rel=1e-9)
    # close to the normal approximation with continuity correction at this n
    from scipy import stats
    sd = math.sqrt(n * (n - 1) * (2 * n + 5) / 72)
    assert lower == pytest.approx(stats.norm.cdf((total // 2 - 2000 + 0.5 - total / 2) / sd),
                                  rel=0.02)


def test_rank_test_exact_agrees_with_scipy():
    rng = np.random.default_rng(1)
    yi = rng.normal(0.3, 0.2, 30)
    vi = rng.uniform(0.01, 0.1, 30)
    fit = SimpleNamespace(yi=yi, vi=vi, method="REML", test="z", level=95.0, labels=None)
    res = bias.rank_test(fit)
    wi = 1 / vi
    ystar = (yi - (wi * yi).sum() / wi.sum()) / np.sqrt(vi - 1 / wi.sum())
    from scipy import stats
    ref = stats.kendalltau(ystar, vi, method="exact")
    assert res.exact and res.tau == pytest.approx(ref.statistic, rel=1e-12)
    assert res.pvalue == pytest.approx(ref.pvalue, rel=1e-9)


# --- properties ---------------------------------------------------------------------------------

def test_trim_and_fill_mirrors_with_the_data():
    """Negating every effect moves the missing studies to the other side."""
    ds = REF["datasets"]["hackshaw1998"]
    a = bias.trim_and_fill(fit_for("hackshaw1998"))
    neg = models.random_effects(-np.array(ds["yi"]), ds["vi"], measure="generic",
                                control=TIGHT)
    b = bias.trim_and_fill(neg)
    assert (a.side, b.side) == ("left", "right") and a.k0 == b.k0 == 7
    assert b.estimate == pytest.approx(-a.estimate, rel=1e-10)
    np.testing.assert_allclose(b.filled_yi, -a.filled_yi, rtol=1e-10)
    # forcing the side metafor chose gives the same result
    c = bias.trim_and_fill(fit_for("hackshaw1998"), side="left")
    assert c.k0 == a.k0 and c.estimate == a.estimate


def test_trim_and_fill_filled_studies_mirror_the_most_extreme():
    res = bias.trim_and_fill(fit_for("molloy2014"))
    yi = np.asarray(fit_for("molloy2014").yi)
    # metafor mirrors the k0 largest effects about the trimmed estimate
    top = np.sort(yi)[-res.k0:]
    centre = (res.filled_yi + top) / 2
    assert np.allclose(centre, centre[0], rtol=1e-12)
    assert res.filled_labels == ("Filled 1", "Filled 2")
    d = res.to_dict()
    assert d["filled"][0]["label"] == "Filled 1" and d["k"] == 18


def test_run_all_json_has_the_architecture_keys():
    res = bias.run_all(fit_for("bcg"))
    d = res.to_dict()
    assert {"z", "pvalue"} <= set(d["egger"]) and {"tau", "pvalue"} <= set(d["rank"])
    assert {"k0", "side", "estimate", "tau2"} <= set(d["trimfill"])
    assert {"rosenthal", "orwin", "rosenberg"} <= set(d["failsafe_n"])
    assert d["pet_peese"]["selected"] in ("PET", "PEESE")
    json.dumps(d, allow_nan=False)
    knha = bias.run_all(fit_for("bcg", "REML_knha")).to_dict()
    assert "t" in knha["egger"] and knha["egger"]["df"] == 11


def test_small_k_notes_instead_of_failing():
    fit = models.random_effects([0.1, 0.4], [0.01, 0.02], measure="generic")
    res = bias.run_all(fit)
    assert res.egger is None and res.pet_peese is None
    assert res.trimfill is None and res.to_dict()["trimfill"] is None
    assert res.notes == (
        "Egger's test needs at least 3 studies (k = 2)",
        "PET-PEESE needs at least 3 studies (k = 2)",
        "trim and fill: choosing the side as metafor does (the slope on the standard error) "
        "needs k >= 3 (k = 2); give side='left' or 'right'")
    # with the side given, trim and fill runs: trimfill(rma(yi, vi), side = "left") gives
    # k0 = 1 (SE 1.546712), the trimmed estimate 0.1 and the filled study 2 * 0.1 - 0.4
    tf = bias.trim_and_fill(fit, side="left")
    assert tf.k0 == 1 and tf.se_k0 == pytest.approx(1.546712, abs=1e-6)
    assert tf.filled_yi.tolist() == [pytest.approx(-0.2, rel=1e-12)]


# --- messages -----------------------------------------------------------------------------------

def test_errors_are_clear():
    fit = models.random_effects([0.1, 0.2, 0.3], [0.01, 0.01, 0.01], measure="generic")
    with pytest.raises(ModelError, match=r"^Egger's test needs studies of different precision "):
        bias.egger_test(fit)
    with pytest.raises(ModelError, match=r"^PET-PEESE: the sei of all studies are equal$"):
        bias.pet_peese(fit)
    with pytest.raises(OptionError, match=r"^estimator: 'Q1' is not one of L0, R0$"):
        bias.trim_and_fill(fit_for("bcg"), estimator="Q1")
    with pytest.raises(OptionError, match=r"^side: 'up' is not one of left, right$"):
        bias.trim_and_fill(fit_for("bcg"), side="up")
    with pytest.raises(OptionError, match=r"^alpha: must lie between 0 and 1, got 5$"):
        bias.fail_safe_n(fit_for("bcg"), alpha=5)


# --- figures ------------------------------------------------------------------------------------

def test_funnel_data_contours_and_filled_studies():
    fit = fit_for("molloy2014")
    tf = bias.trim_and_fill(fit)
    d = plots_bias.funnel_data(fit, trimfill=tf)
    assert [c["p"] for c in d["contours"]] == [0.10, 0.05, 0.01]
    z = [c["z"] for c in d["contours"]]
    assert z == pytest.approx([1.6448536269514722, 1.959963984540054, 2.5758293035489004],
                              rel=1e-12)
    top = d["se_top"]
    assert top == pytest.approx(max(np.sqrt(fit.vi)) * plots_bias.SE_HEADROOM)
    assert d["contours"][1]["upper"][1] == pytest.approx(1.959963984540054 * top)
    # the pseudo CI triangle around the estimate
    assert d["pseudo_ci"]["lower"][0] == d["estimate"] == d["pseudo_ci"]["upper"][0]
    assert d["pseudo_ci"]["upper"][1] - d["estimate"] == pytest.approx(1.959963984540054 * top)
    assert d["filled_yi"].tolist() == tf.filled_yi.tolist()
    assert d["adjusted_estimate"] == tf.estimate
    # six regions: three bands on each side of 0
    assert len(d["regions"]) == 6
    assert {(r["p_upper"], r["p_lower"]) for r in d["regions"]} == \
        {(0.10, 0.05), (0.05, 0.01), (0.01, 0.0)}


def test_funnel_plot_draws_and_returns_axes():
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    fit = fit_for("hackshaw1998")
    tf = bias.trim_and_fill(fit)
    ax = plots_bias.funnel_plot(fit, trimfill=tf, contours=True)
    gids = [a.get_gid() for a in ax.get_children()]
    assert gids.count("funnel-contour") == 6
    pts = next(a for a in ax.collections if a.get_gid() == "funnel-points")
    filled = next(a for a in ax.collections if a.get_gid() == "funnel-filled")
    assert len(pts.get_offsets()) == 37 and len(filled.get_offsets()) == tf.k0 == 7
    assert ax.get_ylim()[0] > ax.get_ylim()[1] == 0     # standard error 0 at the top
    # drawing into a given axes returns those axes
    fig = Figure()
    own = fig.add_subplot()
    assert plots_bias.funnel_plot(fit, ax=own) is own


def test_gosh_and_baujat_plots():
    g = REF["gosh"]["normand1999"]
    fit = models.random_effects(g["yi"], g["vi"], measure="generic")
    res = sensitivity.gosh(fit)
    d = plots_bias.gosh_data(res, highlight=0)
    assert d["highlight"].sum() == 256          # subsets containing study 1
    ax = plots_bias.gosh_plot(res, highlight=0)
    n = sum(len(c.get_offsets()) for c in ax.collections)
    assert n == 511
    with pytest.raises(DataError, match=r"^highlight: no study number 9 \(0-based, k = 9\)$"):
        plots_bias.gosh_data(res, highlight=9)
    ax = plots_bias.baujat_plot(sensitivity.baujat(fit))
    assert len(ax.collections[0].get_offsets()) == 9


# --- the command line ---------------------------------------------------------------------------

def write_csv(path, name):
    ds = REF["datasets"][name]
    lines = ["label,yi,vi,year"] + [f'"{lab}",{y!r},{v!r},{int(yr)}' for lab, y, v, yr in
                                    zip(ds["labels"], ds["yi"], ds["vi"], ds["year"])]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_cli_bias_json_matches_metafor(tmp_path, capsys):
    from metaalliance.cli import main
    csv = write_csv(tmp_path / "molloy.csv", "molloy2014")
    assert main(["bias", "--data", csv, "--yi", "yi", "--vi", "vi", "--json",
                 "--control", "optimum"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    ref = REF["datasets"]["molloy2014"]["models"]["REML_z"]
    assert out["egger"]["z"] == approx(ref["regtest"]["stat"])
    assert out["egger"]["pvalue"] == approx(ref["regtest"]["pvalue"])
    assert out["rank"]["tau"] == approx(ref["ranktest"]["tau"])
    assert out["trimfill"]["k0"] == ref["trimfill_L0"]["k0"] == 2
    assert out["trimfill"]["side"] == "left"
    assert out["trimfill"]["estimate"] == approx(ref["trimfill_L0"]["estimate"])
    assert out["failsafe_n"]["rosenthal"]["n"] == REF["datasets"]["molloy2014"][
        "failsafe_n"]["rosenthal"]["n"]
    assert out["measure"] == "generic" and out["omitted"] == 0
    assert captured.err == ""


def test_cli_bias_text_and_options(tmp_path, capsys):
    from metaalliance.cli import main
    csv = write_csv(tmp_path / "hack.csv", "hackshaw1998")
    assert main(["bias", "--data", csv, "--yi", "yi", "--vi", "vi", "--estimator", "R0",
                 "--method", "DL"]) == 0
    text = capsys.readouterr().out
    ref = REF["datasets"]["hackshaw1998"]["models"]["DL_z"]["trimfill_R0"]
    assert "Trim and fill (R0; metafor trimfill)" in text
    assert f"estimated missing studies on the left side: {ref['k0']}" in text
    assert "Egger's regression test" in text and "Fail-safe N" in text


def test_cli_bias_errors_are_one_line(tmp_path):
    import subprocess
    import sys
    csv = write_csv(tmp_path / "bcg.csv", "bcg")
    proc = subprocess.run([sys.executable, "-m", "metaalliance.cli", "bias", "--data", csv,
                           "--yi", "yi", "--vi", "vi", "--alpha", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr == "error: --alpha: must lie between 0 and 1, got 2\n"
