"""The issue-13 commands end to end: `selection`, `bias` (3PSM entry), `pool --working-model che`
and `pool --rve`: JSON keys, numbers equal to the R references, and one-line errors."""

import json
from pathlib import Path

import numpy as np
import pytest

from cli_run import cli

HERE = Path(__file__).parent / "reference"
SEL = json.loads((HERE / "selection.json").read_text())
DEP = json.loads((HERE / "che_rve.json").read_text())
SELECTION_KEYS = {"type", "k", "estimate", "se", "ci_lower", "ci_upper", "p", "tau2", "delta",
                  "delta_se", "lrt", "lrt_df", "lrt_p"}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)



def no_nan(text):
    def refuse(c):
        raise AssertionError(f"{c} in JSON output")
    return json.loads(text, parse_constant=refuse)


def case(cases, name):
    return next(c for c in cases if c["name"] == name)


def write(name, cols):
    keys = list(cols)
    rows = zip(*[cols[k] for k in keys])
    Path(name).write_text(",".join(keys) + "\n" + "\n".join(
        ",".join(repr(float(v)) if not isinstance(v, str) else v for v in r) for r in rows) + "\n")
    return name


def test_selection_json_is_the_issue_contract(capsys):
    c = case(SEL["cases"], "hackshaw1998_stepfun_025")
    write("h.csv", {"yi": c["yi"], "vi": c["vi"]})
    code, out, _ = cli(capsys, "selection", "--data", "h.csv", "--yi", "yi", "--vi", "vi",
                       "--json")
    assert code == 0
    d = no_nan(out)
    assert SELECTION_KEYS <= set(d)
    assert d["type"] == "stepfun" and d["k"] == len(c["yi"]) and d["lrt_df"] == 1
    assert d["delta"][0] == 1.0 and d["delta_se"][0] is None
    # metafor selmodel(type = "stepfun", steps = .025); tolerance as tests/test_reference_selection
    assert d["estimate"] == pytest.approx(c["beta"], rel=1e-4)
    assert d["delta"][1] == pytest.approx(c["delta"][1], rel=1e-4)
    assert d["lrt"] == pytest.approx(c["LRT"], rel=1e-4)


def test_selection_other_types_and_empty_interval(capsys):
    c = case(SEL["cases"], "hackshaw1998_stepfun_025")
    write("h.csv", {"yi": c["yi"], "vi": c["vi"]})
    code, out, _ = cli(capsys, "selection", "--data", "h.csv", "--yi", "yi", "--vi", "vi",
                       "--type", "negexp", "--json")
    assert code == 0 and no_nan(out)["type"] == "negexp"
    code, _, err = cli(capsys, "selection", "--data", "h.csv", "--yi", "yi", "--vi", "vi",
                       "--steps", "0.001,0.002")
    assert code == 1
    assert err == ("error: h.csv: selection: one or more intervals of the step function contain no "
                   "observed p-value (metafor stops here too); choose other steps\n")
    code, _, err = cli(capsys, "selection", "--data", "h.csv", "--yi", "yi", "--vi", "vi",
                       "--steps", "x")
    assert code == 1 and err == "error: --steps: 'x' is not a comma-separated list of numbers\n"


def test_bias_json_has_the_3psm(capsys):
    c = case(SEL["cases"], "hackshaw1998_stepfun_025")
    write("h.csv", {"yi": c["yi"], "vi": c["vi"]})
    code, out, _ = cli(capsys, "bias", "--data", "h.csv", "--yi", "yi", "--vi", "vi", "--json")
    assert code == 0
    s = no_nan(out)["selection"]
    assert SELECTION_KEYS <= set(s)
    assert s["estimate"] == pytest.approx(c["beta"], rel=1e-4)


def test_pool_che_and_rve_match_r(capsys):
    che = case(DEP["che"], "assink2016_che_06")
    write("a.csv", {"yi": che["yi"], "vi": che["vi"],
                    "study": [f"s{x}" for x in che["cluster"]]})
    code, out, _ = cli(capsys, "pool", "--data", "a.csv", "--yi", "yi", "--vi", "vi",
                       "--cluster", "study", "--working-model", "che", "--rho", "0.6", "--json")
    assert code == 0
    d = no_nan(out)
    for key in ("estimate", "se", "df", "p", "ci_lower", "ci_upper", "sigma2"):
        assert key in d
    assert d["estimate"] == pytest.approx(che["beta"], rel=1e-6)
    assert d["se"] == pytest.approx(che["robust"]["se"], rel=1e-6)
    assert d["sigma2"] == pytest.approx(che["sigma2"], rel=1e-6)
    rve = case(DEP["rve"], "assink2016_corr")
    code, out, _ = cli(capsys, "pool", "--data", "a.csv", "--yi", "yi", "--vi", "vi",
                       "--cluster", "study", "--rve", "--json")
    assert code == 0
    d = no_nan(out)
    for key in ("estimate", "se", "df", "p", "ci_lower", "ci_upper", "tau2"):
        assert key in d
    assert d["estimate"] == pytest.approx(rve["result"]["b"], rel=1e-6)
    assert d["se"] == pytest.approx(rve["result"]["se"], rel=1e-6)
    assert d["df"] == pytest.approx(rve["result"]["df"], rel=1e-6)


def test_pool_che_with_mods_gives_the_htz_test(capsys):
    c = case(DEP["che"], "konstantopoulos2011_che_06_year")
    X = np.asarray(c["X"])
    write("k.csv", {"yi": c["yi"], "vi": c["vi"], "district": [f"d{x}" for x in c["cluster"]],
                    "year": X[:, 1]})
    code, out, _ = cli(capsys, "pool", "--data", "k.csv", "--yi", "yi", "--vi", "vi",
                       "--cluster", "district", "--working-model", "che", "--mods", "~ year",
                       "--json")
    assert code == 0
    t = no_nan(out)["robust_test"]
    assert set(t) == {"f", "df_num", "df_denom", "p"}
    assert t["f"] == pytest.approx(c["htz"]["Fstat"], rel=1e-6)
    assert t["df_denom"] == pytest.approx(c["htz"]["df_denom"], rel=1e-6)


def test_pool_che_and_rve_with_levels_in_one_cluster_match_r(capsys):
    """Issue 13: the curated "~ rater" model (snapshot tests/reference/curated_rater.csv), where
    'combined' and 'observer' are one finding in one sample each. Their CR2 SEs equal the
    intercept's, in clubSandwich's coef_test and robumeta too; clubSandwich's HTZ test stops
    (singular covariance), so ours is absent with a warning instead of an F of ~1e14."""
    data = str(HERE / "curated_rater.csv")
    c = case(DEP["che"], "curated_rater_che_06")
    code, out, err = cli(capsys, "pool", "--data", data, "--yi", "yi", "--vi", "vi",
                         "--cluster", "sample", "--working-model", "che", "--mods", "~ rater",
                         "--json")
    assert code == 0
    d = no_nan(out)
    assert [x["name"] for x in d["coefficients"]] == c["names"]
    assert [x["se"] for x in d["coefficients"]] == pytest.approx(c["robust"]["se"], rel=1e-6)
    assert [x["df"] for x in d["coefficients"]] == pytest.approx(c["robust"]["df"], rel=1e-6)
    assert "robust_test" not in d and "htz" not in c
    assert "warning: che: the cluster-robust covariance of the moderators is singular" in err
    r = case(DEP["rve"], "curated_rater_corr")
    code, out, _ = cli(capsys, "pool", "--data", data, "--yi", "yi", "--vi", "vi",
                       "--cluster", "sample", "--rve", "--mods", "~ rater", "--json")
    assert code == 0
    d = no_nan(out)
    assert [x["estimate"] for x in d["coefficients"]] == pytest.approx(r["result"]["b"], rel=1e-6)
    assert [x["se"] for x in d["coefficients"]] == pytest.approx(r["result"]["se"], rel=1e-6)
    assert [x["df"] for x in d["coefficients"]] == pytest.approx(r["result"]["df"], rel=1e-6)


def test_pool_dependence_option_errors(capsys):
    write("a.csv", {"yi": [0.1, 0.2, 0.3], "vi": [0.01, 0.02, 0.03]})
    code, _, err = cli(capsys, "pool", "--data", "a.csv", "--yi", "yi", "--vi", "vi", "--rve")
    assert (code, err) == (1, "error: --rve and --working-model che need --cluster COL\n")
    code, _, err = cli(capsys, "pool", "--data", "a.csv", "--yi", "yi", "--vi", "vi",
                       "--rho", "0.5")
    assert (code, err) == (1, "error: --rho needs --aggregate COL, --rve or --working-model che\n")


MLCI = json.loads((HERE / "multilevel_ci.json").read_text())


@pytest.mark.parametrize("c", MLCI["cases"], ids=[c["name"] for c in MLCI["cases"]])
def test_pool_sigma2_ci_matches_metafor_confint(capsys, c):
    """pool --cluster COL --sigma2-ci: the profile CIs of tests/reference/multilevel_ci.json
    (metafor confint() on rma.mv, tol 1e-12), through the command line."""
    write("m.csv", {"yi": c["yi"], "vi": c["vi"], "cl": [f"c{x}" for x in c["cluster"]]})
    code, out, _ = cli(capsys, "pool", "--data", "m.csv", "--yi", "yi", "--vi", "vi",
                       "--cluster", "cl", "--method", c["method"], "--level", str(c["level"]),
                       "--sigma2-ci", "--json")
    assert code == 0
    d = no_nan(out)
    assert [s["component"] for s in d["sigma2_ci"]] == [0, 1]
    for s, key in zip(d["sigma2_ci"], ("sigma2_1", "sigma2_2")):
        est, lo, hi = c[key]
        assert [s["estimate"], s["ci_lower"], s["ci_upper"]] == pytest.approx([est, lo, hi],
                                                                             rel=1e-6)
    code, out, _ = cli(capsys, "pool", "--data", "m.csv", "--yi", "yi", "--vi", "vi",
                       "--cluster", "cl", "--method", c["method"], "--level", str(c["level"]),
                       "--sigma2-ci")
    assert code == 0
    assert f"{c['level']:g}% profile-likelihood CIs of the variance components" in out
    assert f"sigma^2 between clusters: {c['sigma2_1'][0]:.4f} [{c['sigma2_1'][1]:.4f}, " in out


def test_pool_sigma2_ci_needs_the_three_level_model(capsys):
    write("m.csv", {"yi": [0.1, 0.2, 0.3, 0.4], "vi": [0.01] * 4, "cl": ["a", "a", "b", "b"]})
    for extra in ([], ["--cluster", "cl", "--rve"]):
        code, _, err = cli(capsys, "pool", "--data", "m.csv", "--yi", "yi", "--vi", "vi",
                           "--sigma2-ci", *extra)
        assert code == 1
        assert err.strip().splitlines()[-1] == (
            "error: --sigma2-ci needs --cluster COL (the three-level model; not with --rve or "
            "--working-model che)")
