"""The multiverse (issue 14): every specification equals the single analysis it names, the
bootstrap is reproducible, the variance decomposition finds a known moderator.

Simulated data here are made by code in this file and labelled SIMULATED; they never leave
tests/."""

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaalliance import cli
from metaalliance.analyses import bias as biasmod
from metaalliance.analyses import multiverse as mvm
from metaalliance.analyses import multiverse_batch as mb
from metaalliance.engine import models
from metaalliance.engine.aggregation import aggregate

#: batched kernels sum in another order than single fits: agreement to rounding, far inside
#: the project's 1e-6
TOL = 1e-9


def _run(argv, capsys):
    rc = cli.main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture(scope="module")
def curated():
    """The curated dataset's multiverse as --json prints it."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main(["multiverse", "--json"]) == 0
    return json.loads(buf.getvalue())


@pytest.fixture(scope="module")
def curated_frame():
    from metaalliance.dataset import findings
    return findings.load(None, None)


def _where(factors, frame):
    """--where flags selecting a specification's subset (instrument_family -> instruments)."""
    out = []
    for f, v in factors.items():
        if f in mvm.HOW or v == "all":
            continue
        if f == "instrument_family":
            members = sorted({i for i in frame["instrument"] if mvm._instrument_family(i) == v})
            out += ["--where", "instrument=" + ",".join(members)]
        else:
            out += ["--where", f"{f}={v}"]
    return out


def _close(a, b, what):
    assert a == pytest.approx(b, rel=TOL, abs=1e-14), what


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_specification_equals_pool(curated, curated_frame, capsys, data):
    """A random specification of the curated multiverse against `pool` / `bias` / the API."""
    spec = data.draw(st.sampled_from(curated["specifications"]))
    f = spec["factors"]
    where = _where(f, curated_frame)
    if f["model"] == "univariate" and f["bias"] == "none":
        rc, out, _ = _run(["pool", *where, "--method", f["method"], "--test", f["test"],
                           "--json"], capsys)
        ref = json.loads(out)
        for key in ("estimate", "se", "ci_lower", "ci_upper", "pi_lower", "pi_upper", "tau2"):
            _close(spec[key], ref[key], (f, key))
        _close(spec["r"], ref["back_transformed"]["estimate"], (f, "r"))
        assert spec["k"] == ref["k"]
    elif f["model"] == "three_level" and f["test"] == "z":
        rc, out, _ = _run(["pool", *where, "--cluster", "sample", "--method", f["method"],
                           "--json"], capsys)
        ref = json.loads(out)
        for key in ("estimate", "se", "ci_lower", "ci_upper", "pi_lower", "pi_upper"):
            _close(spec[key], ref[key], (f, key))
        _close(spec["p"], ref["pvalue"], (f, "p"))
        _close(spec["tau2"], sum(ref["sigma2"]), (f, "tau2"))
    elif f["model"] == "univariate" and f["bias"] in ("trimfill", "pet_peese"):
        method, test = ((f["method"], f["test"]) if f["bias"] == "trimfill" else ("REML", "z"))
        rc, out, _ = _run(["bias", *where, "--method", method, "--test", test, "--json"],
                          capsys)
        ref = json.loads(out)[f["bias"]]
        for key in ("estimate", "ci_lower", "ci_upper"):
            _close(spec[key], ref[key], (f, key))
        if f["bias"] == "trimfill":
            _close(spec["tau2"], ref["tau2"], (f, "tau2"))
            _close(spec["se"], ref["se"], (f, "se"))
            _close(spec["p"], ref["pvalue"], (f, "p"))
            assert spec["k_model"] == ref["k"]
    elif f["model"] == "che":
        rc, out, _ = _run(["pool", *where, "--cluster", "sample", "--working-model", "che",
                           "--rho", str(mvm.CHE_RHO), "--json"], capsys)
        ref = json.loads(out)
        for key in ("estimate", "se", "ci_lower", "ci_upper"):
            _close(spec[key], ref[key], (f, key))
    elif f["model"] == "univariate" and f["bias"] == "3psm":
        rc, out, _ = _run(["selection", *where, "--json"], capsys)
        ref = json.loads(out)
        for key in ("estimate", "se", "ci_lower", "ci_upper", "tau2"):
            _close(spec[key], ref[key], (f, key))
    else:       # composite and three-level t (no CLI command for them): the Python API
        rc, out, _ = _run(["pool", *where, "--cluster", "sample", "--json"], capsys)
        sel = curated_frame
        sel = sel[~sel["outcome_domain"].isin(["adherence", "retention", "dropout"])]
        for fac, val in f.items():
            if fac in mvm.HOW or val == "all":
                continue
            col = (sel["instrument"].map(mvm._instrument_family) if fac == "instrument_family"
                   else sel[fac])
            sel = sel[col == val]
        if f["model"] == "three_level":
            from metaalliance.engine.multilevel import three_level
            fit = three_level(sel["yi"], sel["vi"], sel["sample"], method=f["method"],
                              test=f["test"])
            for key in ("estimate", "se", "ci_lower", "ci_upper", "pi_lower", "pvalue"):
                _close(spec["p" if key == "pvalue" else key], getattr(fit, key), (f, key))
            return
        agg = aggregate(sel["yi"], sel["vi"], sel["sample"], rho=mvm.COMPOSITE_RHO)
        if f["bias"] == "3psm":
            from metaalliance.analyses.selection import selection_model
            fit = selection_model(agg.yi, agg.vi)
        elif f["bias"] == "pet_peese":
            fit = biasmod.pet_peese(models.random_effects(agg.yi, agg.vi))
        else:
            fit = models.random_effects(agg.yi, agg.vi, method=f["method"], test=f["test"])
        if f["bias"] == "trimfill":
            fit = biasmod.trim_and_fill(fit).fit
        _close(spec["estimate"], fit.estimate, (f, "estimate"))
        _close(spec["ci_lower"], fit.ci_lower, (f, "ci_lower"))
        assert spec["k"] == len(sel) and spec["samples"] == sel["sample"].nunique()
    assert rc == 0


def test_curated_summary_is_complete_and_finite(curated):
    s = curated["summary"]
    specs = curated["specifications"]
    assert s["n_specifications"] == len(specs) >= 20
    rs = np.array([x["r"] for x in specs])
    assert s["median"] == pytest.approx(float(np.median(rs)))
    assert s["min"] == pytest.approx(rs.min()) and s["max"] == pytest.approx(rs.max())
    above = np.mean([x["r_ci_lower"] > 0 for x in specs])
    assert s["share_ci_above_zero"] == pytest.approx(above)
    assert s["factor_moving_most"] == max(s["variance_decomposition"],
                                          key=s["variance_decomposition"].get)
    # every "which" factor value is "all" or a level of the data
    for x in specs:
        assert set(x["factors"]) == set(s["factors"])
    # a level that is not available is listed, never silently dropped
    for fac, lev, mod in (("model", "che", "metaalliance.engine.che"),
                          ("bias", "3psm", "metaalliance.analyses.selection")):
        present = {x["factors"][fac] for x in specs}
        try:
            __import__(mod)
            assert lev in present
        except ImportError:
            assert lev in s["unavailable"][fac] and lev not in present


# ------------------------------------------------------------------------ batched kernels


def _sim(k=80, seed=5):
    """SIMULATED data with studies missing on one side (for trim and fill)."""
    rng = np.random.default_rng(seed)
    n = rng.integers(20, 300, k)
    v = 1.0 / (n - 3)
    y = 0.2 + rng.normal(0, 0.1, k) + rng.normal(0, np.sqrt(v))
    return y, v


@pytest.mark.parametrize("method", ["REML", "DL", "PM", "ML"])
@pytest.mark.parametrize("flip", [1.0, -1.0])
def test_trimfill_batch_equals_trim_and_fill(method, flip):
    y, v = _sim()
    y = flip * (y + 0.8 * np.sqrt(v))            # small-study effects: filling happens
    rng = np.random.default_rng(11)
    masks = rng.random((12, y.size)) < 0.5
    for test in ("z", "knha"):
        got, fails = mb.trimfill_batch(y, v, masks, method, test)
        assert not fails
        for s, m in enumerate(masks):
            tf = biasmod.trim_and_fill(models.random_effects(y[m], v[m], method, test))
            for key in ("estimate", "se", "ci_lower", "ci_upper", "pi_lower", "tau2"):
                _close(got[key][s], getattr(tf.fit, key), (method, test, s, key))
            _close(got["p"][s], tf.fit.pvalue, (method, test, s, "p"))
            assert got["k_model"][s] == tf.fit.k


def test_pet_peese_batch_equals_pet_peese():
    y, v = _sim(60, 8)
    rng = np.random.default_rng(2)
    masks = rng.random((15, y.size)) < 0.4
    signs = rng.choice([-1.0, 1.0], 15)
    got, fails = mb.pet_peese_batch(y, v, masks, signs)
    assert not fails

    class Fit:                         # the direction is what pet_peese reads of the fit
        pass

    for s, m in enumerate(masks):
        f = Fit()
        f.yi, f.vi, f.method, f.test, f.level, f.labels = y[m], v[m], "REML", "z", 95, None
        f.estimate = signs[s]
        ref = biasmod.pet_peese(f)
        line = ref.peese if ref.selected == "PEESE" else ref.pet
        _close(got["estimate"][s], ref.estimate, s)
        _close(got["ci_upper"][s], ref.ci_upper, s)
        _close(got["se"][s], line.intercept_se, s)
        _close(got["p"][s], line.intercept_pvalue, s)


def test_stacked_composites_equal_aggregate():
    rng = np.random.default_rng(3)
    k = 60
    y, v = rng.normal(size=k), rng.uniform(.01, .1, k)
    codes = rng.integers(0, 15, k)
    masks = rng.random((20, k)) < 0.6
    ya, va, blocks = mb.stacked_composites(y, v, codes, masks, 0.5)
    for s in range(20):
        a = aggregate(y[masks[s]], v[masks[s]], codes[masks[s]], rho=0.5)
        np.testing.assert_allclose(ya[blocks[s]], a.yi, rtol=1e-13)
        np.testing.assert_allclose(va[blocks[s]], a.vi, rtol=1e-13)


# ---------------------------------------------------------------- simulated multiverses


def sim_frame(k=160, seed=20261206, effect=0.35):
    """SIMULATED findings: moderator `mod` (a/b) shifts z by `effect`; x1, x2 are noise."""
    rng = np.random.default_rng(seed)
    n = rng.integers(30, 300, k)
    study = rng.integers(0, k // 2, k)
    mod = rng.choice(["a", "b"], k)
    x1 = rng.choice(["p", "q", "s"], k)
    x2 = rng.choice(["u", "w"], k)
    z = 0.1 + effect * (mod == "b") + rng.normal(0, 0.05, k)
    r = np.tanh(z + rng.normal(0, np.sqrt(1 / (n - 3))))
    return pd.DataFrame({"r": r, "n": n, "study": [f"s{i}" for i in study], "mod": mod,
                         "x1": x1, "x2": x2})


SMALL = mvm.MultiverseConfig(which=("mod", "x1", "x2"), methods=("REML", "DL"),
                             models=("univariate", "composite"), tests=("z", "knha"),
                             bias=("none", "pet_peese"), min_k=10, min_samples=5)


def _small_mv(df=None, config=SMALL):
    df = sim_frame() if df is None else df
    yi = np.arctanh(df["r"].to_numpy())
    vi = 1 / (df["n"].to_numpy() - 3)
    return mvm.run(df, yi, vi, df["study"], config)


def test_variance_decomposition_names_the_known_moderator():
    mv = _small_mv()
    s = mvm.summarise(mv)
    assert s["factor_moving_most"] == "mod"
    dec = s["variance_decomposition"]
    assert dec["mod"] > 0.5 > max(dec["x1"], dec["x2"])
    med = s["level_medians"]["mod"]
    assert med["b"] - med["a"] == pytest.approx(0.35, abs=0.1)


def test_csv_multiverse_via_the_command_line(tmp_path, capsys):
    df = sim_frame(120)
    csv = tmp_path / "sim.csv"
    df.to_csv(csv, index=False)
    toml = tmp_path / "multiverse.toml"
    toml.write_text('[multiverse]\nwhich = ["mod", "x1"]\nmethods = ["REML", "PM"]\n'
                    'models = ["univariate", "three_level"]\nbias = ["none", "trimfill"]\n'
                    "min_k = 8\nmin_samples = 4\n")
    out_dir = tmp_path / "mv"
    rc, out, err = _run(["multiverse", "--data", str(csv), "--r", "r", "--n", "n",
                         "--cluster", "study", "--config", str(toml), "--json",
                         "--out", str(out_dir)], capsys)
    assert rc == 0, err
    d = json.loads(out)
    assert d["summary"]["factor_moving_most"] == "mod"
    assert {x["factors"]["model"] for x in d["specifications"]} == {"univariate", "three_level"}
    spec = next(x for x in d["specifications"] if x["factors"] == {
        "mod": "b", "x1": "all", "method": "PM", "model": "univariate", "test": "knha",
        "bias": "none"})
    rc, out, _ = _run(["pool", "--data", str(csv), "--r", "r", "--n", "n", "--where",
                       "mod=b", "--method", "PM", "--test", "knha", "--json"], capsys)
    ref = json.loads(out)
    for key in ("estimate", "se", "ci_lower", "pi_upper", "tau2"):
        _close(spec[key], ref[key], key)
    table = pd.read_csv(out_dir / "specifications.csv")
    assert len(table) == len(d["specifications"])
    for name in ("specification_curve", "multiverse_histogram"):
        assert (out_dir / f"{name}.png").stat().st_size > 1000
        assert (out_dir / f"{name}.pdf").read_bytes()[:4] == b"%PDF"


def test_bootstrap_is_reproducible_with_a_seed():
    mv = _small_mv(sim_frame(80, effect=0.0))
    a = mvm.bootstrap(mv, 12, seed=7)
    b = mvm.bootstrap(mv, 12, seed=7)
    assert a == b
    c = mvm.bootstrap(mv, 12, seed=7, jobs=2)          # loky processes: the same numbers
    assert c == a
    d = mvm.bootstrap(mv, 12, seed=8)
    assert d["null_median_p95"] != a["null_median_p95"]
    assert 1 / 13 <= a["p_median"] <= 1 and 1 / 13 <= a["p_share_significant"] <= 1


def test_bootstrap_finds_a_real_effect():
    """With a true effect of r ~ .25 in every finding no null replicate reaches the curve."""
    mv = _small_mv(sim_frame(80, effect=0.3))
    b = mvm.bootstrap(mv, 19, seed=1)
    assert b["p_median"] == pytest.approx(1 / 20)
    assert b["p_share_significant"] == pytest.approx(1 / 20)


def test_dask_local_cluster_gives_the_same_numbers(capsys, tmp_path):
    distributed = pytest.importorskip("distributed")
    df = sim_frame(60)
    mv1 = _small_mv(df)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        yi = np.arctanh(df["r"].to_numpy())
        vi = 1 / (df["n"].to_numpy() - 3)
        mv2 = mvm.run(df, yi, vi, df["study"], SMALL, scheduler=cluster.scheduler_address)
        pd.testing.assert_frame_equal(mv1.results, mv2.results)
        b1 = mvm.bootstrap(mv1, 6, seed=3)
        b2 = mvm.bootstrap(mv2, 6, seed=3, scheduler=cluster.scheduler_address)
        assert b1 == b2
        csv = tmp_path / "sim.csv"
        df.to_csv(csv, index=False)
        rc, out, err = _run(["multiverse", "--data", str(csv), "--r", "r", "--n", "n",
                             "--cluster", "study", "--json", "--scheduler",
                             cluster.scheduler_address], capsys)
        assert rc == 0, err
        assert json.loads(out)["summary"]["n_specifications"] > 0


# ------------------------------------------------------------------------------ bad input


def test_bootstrap_needs_a_seed(capsys):
    rc, out, err = _run(["multiverse", "--bootstrap", "10"], capsys)
    assert rc == 1
    assert err.strip().splitlines()[-1] == (
        "error: --bootstrap needs --seed S (so the p-values can be reproduced)")


def test_config_unknown_key(tmp_path, capsys):
    toml = tmp_path / "m.toml"
    toml.write_text("min_kk = 3\n")
    rc, _, err = _run(["multiverse", "--config", str(toml)], capsys)
    assert rc == 1
    assert err.strip() == (f"error: {toml}: unknown key 'min_kk' (known: bias, composite_rho, "
                           "control, dedupe, exclude_levels, level, max_specifications, "
                           "methods, min_k, min_samples, models, tests, which)")


def test_config_bad_method(tmp_path, capsys):
    toml = tmp_path / "m.toml"
    toml.write_text('methods = ["REML", "XX"]\n')
    rc, _, err = _run(["multiverse", "--config", str(toml)], capsys)
    assert rc == 1
    assert err.strip() == (f"error: {toml}: multiverse methods: 'XX' is not one of EE, DL, "
                           "HE, HS, SJ, ML, REML, EB, PM")


def test_too_few_findings(capsys):
    rc, _, err = _run(["multiverse", "--where", "population=youth"], capsys)
    assert rc == 1
    assert "min_k = 5 findings and min_samples = 3 samples are needed" in err


def test_without_clusters_only_univariate_models_run():
    df = sim_frame(50)
    yi = np.arctanh(df["r"].to_numpy())
    vi = 1 / (df["n"].to_numpy() - 3)
    mv = mvm.run(df, yi, vi, None, SMALL)
    assert set(mv.results["model"]) == {"univariate"}
    assert mv.unavailable["model"]["composite"] == "needs a sample (cluster) column"


# ------------------------------------------------------------------------------- figures


def test_specification_curve_figure(tmp_path):
    from metaalliance.figures import specification_curve as sc
    from metaalliance.figures.plots import save_figure

    mv = _small_mv()
    rows = sc.indicator_rows(mv.results, list(mv.factors) + list(mvm.HOW))
    # one row per level of every factor that varies, "all" first
    assert rows[0] == ("mod", "all")
    assert ("model", "univariate") in rows and all(f != "bias" or lev in ("none", "pet_peese")
                                                   for f, lev in rows)
    fig = sc.specification_curve(mv.results, list(mv.factors) + list(mvm.HOW))
    curve, panel = fig.axes[:2]
    n = len(mv.results)
    assert curve.get_xlim()[0] < 1 and curve.get_xlim()[1] > n
    assert len(panel.get_yticks()) == len(rows)
    path = tmp_path / "curve.png"
    save_figure(fig, path, dpi=150)
    assert path.stat().st_size > 1000
    width_mm = fig.get_size_inches()[0] * 25.4
    assert width_mm == pytest.approx(174.0)


def test_report_figure_caption_states_the_summary(curated):
    from metaalliance.dataset import findings

    df = findings.load(None, None)
    main = df[~df["outcome_domain"].isin(["adherence", "retention", "dropout"])]
    mv, s, caption = mvm.report_figure(main.reset_index(drop=True))
    assert s["n_specifications"] == curated["summary"]["n_specifications"]
    assert s["median"] == pytest.approx(curated["summary"]["median"])
    from metaalliance.formatting import fmt_int, fmt_r
    assert f"Median r = {fmt_r(s['median'])}" in caption
    assert f"All {fmt_int(s['n_specifications'])} specifications" in caption
    # too few findings for 20 specifications: no figure
    assert mvm.report_figure(main.head(4)) is None


def test_shipped_multiverse_toml_is_the_default():
    from pathlib import Path

    shipped = mvm.load_config(Path(__file__).resolve().parents[1] / "multiverse.toml")
    assert shipped == mvm.MultiverseConfig()


def test_che_and_3psm_light_up_when_their_modules_exist(monkeypatch):
    """The interfaces of engine.che.che and analyses.selection.selection_model (issue 13),
    stood in for by fakes that record their calls: the levels are run, not listed as
    unavailable, and their numbers reach the table."""
    import sys
    import types
    from collections import namedtuple

    CHE = namedtuple("CHEResult", "estimate se df pvalue ci_lower ci_upper sigma2")
    SEL = namedtuple("SelectionResult", "estimate se ci_lower ci_upper pvalue tau2")
    calls = []

    def che(yi, vi, cluster, rho=0.6, X=None, level=95):
        calls.append(("che", len(yi), rho))
        return CHE(0.11, 0.02, 7.5, 0.001, 0.07, 0.15, (0.01, 0.002))

    def selection_model(yi, vi, type="stepfun", steps=(0.025,)):
        calls.append(("3psm", len(yi), type, steps))
        return SEL(0.09, 0.03, 0.03, 0.15, 0.004, 0.012)

    monkeypatch.setitem(sys.modules, "metaalliance.engine.che",
                        types.SimpleNamespace(che=che))
    monkeypatch.setitem(sys.modules, "metaalliance.analyses.selection",
                        types.SimpleNamespace(selection_model=selection_model))
    cfg = mvm.MultiverseConfig(which=("mod",), methods=("REML",), models=("univariate", "che"),
                               tests=("z",), bias=("none", "3psm"), min_k=10, min_samples=5)
    mv = _small_mv(config=cfg)
    assert mv.unavailable == {}
    res = mv.results
    che_rows = res[res["model"] == "che"]
    psm_rows = res[res["bias"] == "3psm"]
    assert len(che_rows) == len(psm_rows) == mv.subsets.shape[0]
    assert set(che_rows["test"]) == {"cr2"} and set(psm_rows["method"]) == {"ML"}
    assert np.allclose(che_rows["estimate"], 0.11) and np.allclose(che_rows["tau2"], 0.012)
    assert np.allclose(psm_rows["ci_upper"], 0.15) and np.allclose(psm_rows["p"], 0.004)
    assert ("che", mv.subsets[0].sum(), mvm.CHE_RHO) in calls
    assert any(c[0] == "3psm" and c[2:] == ("stepfun", (0.025,)) for c in calls)
