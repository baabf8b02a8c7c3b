"""Bad input never crashes, never corrupts, never gives silent nonsense.

Each test here is a row (or rows) of the table in docs/reliability.md: an input a user can
get wrong, what metaalliance does with it (exit code and the exact one-line message on the
command line; the exception and message in the Python API), and where that follows metafor
(tests/reference/reliability.R -> reliability.json). The CSV files are small made-up edge
cases written by the tests, not findings; the k = 100,000 data are simulated by seeded code.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metaalliance.analyses import bias
from metaalliance.engine import estimators
from metaalliance.engine import models
from metaalliance.analyses import sensitivity
from metaalliance.dataset import tabular
from metaalliance.cli import main
from metaalliance.errors import DataError, MetaAllianceWarning, ModelError, OptionError
from conftest import patch_engine
from cli_run import cli

REF = json.loads((Path(__file__).parent / "reference" / "reliability.json").read_text())["cases"]
RTOL = 1e-6
#: metafor's reference fits stop when tau^2 changes by < 1e-10 (reliability.R); at the
#: boundary (ML with two studies) its tau^2 is ~1e-11 where ours is ~1e-13, so quantities
#: that are ~0 there (tau^2, I^2 in percent) are compared absolutely
ABS_TAU2 = 1e-9
ABS_I2 = 1e-5
COMMANDS = ("pool", "bias", "sensitivity")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Work in tmp_path so that messages name files as the user typed them (d.csv)."""
    monkeypatch.chdir(tmp_path)



def csv(name, text):
    Path(name).write_text(text)
    return name


def no_nan(text):
    """JSON from the command line: parse it, refusing NaN/Infinity."""
    def refuse(c):
        raise AssertionError(f"{c} in JSON output")
    return json.loads(text, parse_constant=refuse)


R_N = ("--r", "r", "--n", "n")
YI_VI = ("--yi", "yi", "--vi", "vi")


# --- inputs every command refuses with one line ---------------------------------------------------

REFUSED = [
    # (id, file content, column flags, the message after "error: d.csv: ")
    ("empty file", "", R_N, "the file is empty"),
    ("header only", "r,n\n", R_N, "no data rows"),
    ("r = 1", "r,n\n0.2,50\n1,40\n", R_N,
     "row 3: r: 1 must lie strictly between -1 and 1 (Fisher's z is infinite at +-1)"),
    ("r = -1", "r,n\n0.2,50\n-1.0,40\n", R_N,
     "row 3: r: -1 must lie strictly between -1 and 1 (Fisher's z is infinite at +-1)"),
    ("r > 1", "r,n\n1.2,50\n0.1,40\n", R_N,
     "row 2: r: 1.2 must lie strictly between -1 and 1 (Fisher's z is infinite at +-1)"),
    ("n = 3", "r,n\n0.2,50\n0.1,3\n", R_N,
     "row 3: n: 3 must be > 3 (the variance 1/(n-3) needs n >= 4)"),
    ("n negative", "r,n\n0.2,-10\n0.1,30\n", R_N,
     "row 2: n: -10 must be > 3 (the variance 1/(n-3) needs n >= 4)"),
    ("vi = 0", "yi,vi\n0.3,0.01\n0.2,0\n", YI_VI,
     "row 3: vi: 0 must be > 0 (a sampling variance)"),
    ("vi negative", "yi,vi\n0.3,0.01\n0.2,-0.02\n", YI_VI,
     "row 3: vi: -0.02 must be > 0 (a sampling variance)"),
    ("inf", "yi,vi\n0.3,0.01\ninf,0.02\n", YI_VI, "row 3: yi: 'inf' is not a finite number"),
    ("-inf variance", "yi,vi\n0.3,-inf\n0.1,0.02\n", YI_VI,
     "row 2: vi: '-inf' is not a finite number"),
    ("text in r", "r,n\n0.3,50\nabc,80\n", R_N, "row 3: r: 'abc' is not a number"),
    ("text in n", "r,n\n0.2,fifty\n0.1,40\n", R_N, "row 2: n: 'fifty' is not a number"),
    ("decimal comma", "r;n\n0,2;50\n", R_N, "no column 'r', 'n' (columns: r;n)"),
    ("missing column", "x,n\n0.2,50\n0.1,40\n", R_N, "no column 'r' (columns: x, n)"),
    ("duplicate column", "r,n,r\n0.2,50,0.1\n", R_N, "duplicate column name(s): r"),
    ("every row incomplete", "r,n\n,50\nNA,40\n", R_N,
     "no usable rows (all 2 had missing values)"),
    # found by fuzzing: 1/vi, yi^2 or 1/(n-3) overflow float64 (see options.YI_MAX, VI_MIN)
    ("tiny variance", "yi,vi\n0.3,5e-324\n0.1,0.02\n", YI_VI,
     "row 2: vi: 4.94066e-324 must lie between 1e-100 and 1e+100 (beyond, the weights 1/vi "
     "overflow)"),
    ("huge effect", "yi,vi\n1e308,0.01\n0.1,0.02\n", YI_VI,
     "row 2: yi: 1e+308 must lie within +-1e+50 (beyond, the weighted sums overflow)"),
    ("huge n", "r,n\n0.2,1e308\n0.1,50\n", R_N,
     "row 2: n: 1e+308 is too large to be a sample size (the variance 1/(n-3) would be below "
     "1e-100)"),
]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case, content, cols, message", REFUSED, ids=[c[0] for c in REFUSED])
def test_bad_csv_is_one_line_naming_file_row_and_column(capsys, command, case, content, cols,
                                                        message):
    csv("d.csv", content)
    code, out, err = cli(capsys, command, "--data", "d.csv", *cols, "--json")
    assert (code, out) == (1, "")
    warnings_lines = [ln for ln in err.splitlines() if ln.startswith("warning: ")]
    assert err.splitlines()[len(warnings_lines):] == [f"error: d.csv: {message}"]


@pytest.mark.parametrize("case, content, cols, message", REFUSED, ids=[c[0] for c in REFUSED])
def test_bad_csv_through_the_api(case, content, cols, message):
    csv("d.csv", content)
    kw = dict(zip(("r", "n") if cols == R_N else ("yi", "vi"), (cols[1], cols[3])))
    with pytest.raises(DataError) as exc, warnings.catch_warnings():
        warnings.simplefilter("ignore", MetaAllianceWarning)
        tabular.read_effects("d.csv", **kw)
    assert str(exc.value) == f"d.csv: {message}"


def test_missing_file(capsys):
    for command in COMMANDS:
        code, _, err = cli(capsys, command, "--data", "nothere.csv", *R_N)
        assert (code, err) == (1, "error: nothere.csv: file not found\n")


def test_undecodable_bytes(capsys):
    Path("d.csv").write_bytes(b"r,n\n0.2,50\n\xff\xfe,40\n")
    code, _, err = cli(capsys, "pool", "--data", "d.csv", *R_N)
    assert code == 1
    assert err.startswith("error: d.csv: cannot read as CSV: ") and err.count("\n") == 1


def test_oversized_csv_is_refused_before_reading(capsys, monkeypatch):
    monkeypatch.setattr(tabular, "MAX_CSV_BYTES", 10)
    csv("d.csv", "r,n\n0.2,50\n0.1,40\n")
    code, _, err = cli(capsys, "pool", "--data", "d.csv", *R_N)
    assert (code, err) == (1, "error: d.csv: file is larger than 10 bytes\n")


def test_no_traceback_in_a_real_process(tmp_path):
    """The same boundary in a separate process: exit code 1, one line, no traceback."""
    csv("d.csv", "r,n\n0.2,50\n1,40\n")
    proc = subprocess.run([sys.executable, "-m", "metaalliance.cli", "bias", "--data", "d.csv",
                           *R_N], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == ("error: d.csv: row 3: r: 1 must lie strictly between -1 and 1 "
                           "(Fisher's z is infinite at +-1)\n")


# --- missing values: omitted with a warning, as metafor's na.omit --------------------------------

@pytest.mark.parametrize("command", COMMANDS)
def test_missing_cells_are_omitted_with_a_warning(capsys, command):
    csv("d.csv", "r,n\n0.3,50\nNA,80\n0.1,60\n,70\n0.25,40\nnan,30\n")
    code, out, err = cli(capsys, command, "--data", "d.csv", *R_N, "--json")
    assert code == 0
    assert err == ("warning: d.csv: omitted 3 row(s) with a missing value in r, n "
                   "(rows 3, 5, 7)\n")
    assert no_nan(out)["omitted"] == 3


def test_missing_yi_matches_metafor_na_omit(capsys):
    ref = REF["missing_yi"]
    csv("d.csv", "yi,vi\n0.3,0.02\nNA,0.01\n0.1,0.03\n0.25,0.015\n")
    code, out, err = cli(capsys, "pool", "--data", "d.csv", *YI_VI, "--json")
    assert code == 0 and ref["warnings"] == ["Studies with NAs omitted from model fitting."]
    res = no_nan(out)
    assert (res["k"], res["omitted"]) == (ref["k"], 1)
    assert res["estimate"] == pytest.approx(ref["estimate"], rel=RTOL)
    assert res["se"] == pytest.approx(ref["se"], rel=RTOL)


def test_missing_moderator_and_subgroup_values(capsys):
    csv("d.csv", "r,n,g,x\n0.3,50,a,1\n0.2,80,a,\n0.1,60,b,3\n0.25,70,a,4\n0.05,90,b,5\n"
                 "0.4,40,,6\n")
    code, out, err = cli(capsys, "pool", "--data", "d.csv", *R_N, "--by", "g", "--json")
    assert code == 0 and no_nan(out)["omitted"] == 1
    assert err == "warning: d.csv: omitted 1 row(s) with a missing value in g (rows 7)\n"
    code, out, err = cli(capsys, "pool", "--data", "d.csv", *R_N, "--mods", "~ x", "--json")
    assert code == 0 and no_nan(out)["k"] == 5
    assert err == "warning: d.csv: omitted 1 row(s) with a missing value in x (rows 3)\n"


def test_every_subgroup_value_missing(capsys):
    csv("d.csv", "r,n,g\n0.3,50,\n0.2,80,\n")
    code, _, err = cli(capsys, "pool", "--data", "d.csv", *R_N, "--by", "g")
    assert (code, err) == (1, "error: d.csv: every row has a missing value in g\n")
    with pytest.raises(DataError, match="^subgroups: every row has a missing g$"):
        models.subgroups([0.3, 0.2], [0.02, 0.01], [None, None], by="g")


# --- small k ----------------------------------------------------------------------------------------

def test_one_study(capsys):
    ref = REF["k1"]
    csv("d.csv", "r,n\n0.3,50\n")
    code, out, err = cli(capsys, "pool", "--data", "d.csv", *R_N, "--json")
    assert code == 0
    assert err == ("warning: k = 1: tau^2 is set to 0 and heterogeneity cannot be assessed "
                   "(as metafor)\n")
    res = no_nan(out)
    assert res["estimate"] == pytest.approx(ref["estimate"], rel=RTOL)
    assert res["se"] == pytest.approx(ref["se"], rel=RTOL)
    assert (res["tau2"], res["q"], res["i2"], res["tau2_ci_lower"]) == (0.0, 0.0, 0.0, None)
    for command, what in (("bias", "bias analyses"), ("sensitivity", "sensitivity analyses")):
        code, out, err = cli(capsys, command, "--data", "d.csv", *R_N)
        assert (code, out) == (1, "")
        assert err == f"error: d.csv: {what} need at least 2 findings (k = 1)\n"
    with pytest.warns(MetaAllianceWarning):
        fit = models.random_effects([ref["yi"]], [ref["vi"]])
    with pytest.raises(ModelError, match=r"^bias analyses need at least 2 studies \(k = 1\)$"):
        bias.run_all(fit)
    with pytest.raises(ModelError, match=r"^leave-one-out needs at least 2 studies \(k = 1\)$"):
        sensitivity.run_all(fit)


@pytest.mark.parametrize("method", ["EE", "DL", "HE", "HS", "SJ", "ML", "REML", "EB", "PM"])
def test_two_studies_match_metafor(capsys, method):
    ref = REF["k2"]["methods"][method]
    csv("d.csv", "r,n\n0.3,50\n0.1,80\n")
    # reliability.R runs metafor to its optimum (CTRL): compare with --control optimum
    code, out, err = cli(capsys, "pool", "--data", "d.csv", *R_N, "--method", method, "--json",
                         "--control", "optimum")
    assert code == 0 and err == ""
    res = no_nan(out)
    for key in ("estimate", "se", "ci_lower", "ci_upper", "q", "q_pvalue", "h2"):
        assert res[key] == pytest.approx(ref[key], rel=RTOL), key
    assert res["tau2"] == pytest.approx(ref["tau2"], rel=RTOL, abs=ABS_TAU2)
    assert res["i2"] == pytest.approx(ref["i2"], rel=RTOL, abs=ABS_I2)


def test_two_studies_bias_and_sensitivity(capsys):
    csv("d.csv", "r,n\n0.3,50\n0.1,80\n")
    code, out, err = cli(capsys, "bias", "--data", "d.csv", *R_N, "--json")
    assert code == 0 and err == ""
    res = no_nan(out)
    assert res["egger"] is None and res["pet_peese"] is None and res["trimfill"] is None
    assert "Egger's test needs at least 3 studies (k = 2)" in res["notes"]
    code, out, err = cli(capsys, "sensitivity", "--data", "d.csv", *R_N, "--json")
    assert code == 0
    loo = no_nan(out)["leave_one_out"]
    # leaving one of two studies out leaves the other: its own z and se
    assert [row["estimate"] for row in loo] == pytest.approx(REF["k2"]["yi"][::-1], rel=1e-12)


# --- identical effects: tau^2 = 0 exactly --------------------------------------------------------

def test_identical_effects_give_tau2_exactly_zero(capsys):
    ref = REF["identical"]
    csv("d.csv", "r,n\n0.3,50\n0.3,80\n0.3,120\n")
    for method in ("REML", "DL", "PM", "SJ"):
        code, out, err = cli(capsys, "pool", "--data", "d.csv", *R_N, "--method", method,
                             "--json")
        res = no_nan(out)
        assert code == 0 and err == ""
        assert res["tau2"] == 0.0 and res["i2"] == 0.0 and res["q"] == pytest.approx(0, abs=1e-20)
        assert res["estimate"] == pytest.approx(ref["estimate"], rel=1e-12)
        assert res["se"] == pytest.approx(ref["se"], rel=RTOL)
    for command in ("bias", "sensitivity"):
        code, out, _ = cli(capsys, command, "--data", "d.csv", *R_N, "--json")
        assert code == 0
        no_nan(out)


@pytest.mark.parametrize("command", COMMANDS)
def test_identical_effects_with_knapp_hartung_stop(capsys, command):
    """metafor reports se = 0, t = Inf and a CI of width 0 here (reliability.json); we stop."""
    assert REF["identical_knha"]["se"] == 0
    csv("d.csv", "r,n\n0.3,50\n0.3,80\n0.3,120\n")
    code, out, err = cli(capsys, command, "--data", "d.csv", *R_N, "--test", "knha")
    assert (code, out) == (1, "")
    assert err == ("error: d.csv: the Knapp-Hartung adjustment is undefined: the weighted "
                   "residuals are all zero (identical effect sizes?); use test 'z'\n")


# --- extreme variance ratios -----------------------------------------------------------------------

@pytest.mark.parametrize("method", ["EE", "DL", "HE", "HS", "SJ", "ML", "REML", "EB", "PM"])
def test_extreme_variance_ratio_warns_as_metafor_and_agrees(capsys, method):
    ref = REF["extreme_vi"]["methods"][method]
    assert ref["warnings"] == ["Ratio of largest to smallest sampling variance extremely large. "
                               "May not be able to obtain stable results."]
    csv("d.csv", "yi,vi\n0.3,1e-8\n0.2,1e3\n0.1,0.05\n-0.4,500\n")
    code, out, err = cli(capsys, "pool", "--data", "d.csv", *YI_VI, "--method", method,
                         "--json")
    assert code == 0
    assert err == ("warning: the largest sampling variance is 1e+11 times the smallest "
                   "(>= 1e+07): results may be numerically unstable (as metafor warns)\n")
    res = no_nan(out)
    for key in ("estimate", "se", "q", "q_pvalue"):
        assert res[key] == pytest.approx(ref[key], rel=RTOL), key
    assert res["tau2"] == pytest.approx(ref["tau2"], rel=RTOL, abs=ABS_TAU2)


def test_extreme_variance_ratio_bias_and_sensitivity_stay_finite(capsys):
    csv("d.csv", "yi,vi\n0.3,1e-8\n0.2,1e3\n0.1,0.05\n-0.4,500\n0.25,0.02\n")
    for command in ("bias", "sensitivity"):
        code, out, _ = cli(capsys, command, "--data", "d.csv", *YI_VI, "--json")
        assert code == 0
        no_nan(out)


# --- duplicate ids -----------------------------------------------------------------------------------

def test_duplicate_labels_are_numbered_as_metafor(capsys):
    assert REF["duplicate_labels"]["slab"] == ["A.1", "A.2"]
    csv("d.csv", "study,r,n\nA,0.3,50\nA,0.2,80\nB,0.1,60\n")
    code, out, err = cli(capsys, "sensitivity", "--data", "d.csv", *R_N, "--json")
    assert code == 0
    assert err == ("warning: d.csv: study: 'A' labels rows 2, 3; numbered A.1, A.2 ... as "
                   "metafor does (several findings of one study? --cluster study models them "
                   "as dependent)\n")
    assert [row["label"] for row in no_nan(out)["leave_one_out"]] == ["A.1", "A.2", "B"]


def test_duplicate_finding_ids_in_the_curated_data(dataset, capsys):
    findings_dir, bib = dataset
    path = findings_dir / "alpha2001first.yaml"
    path.write_text(path.read_text().replace("id: f2", "id: f1"))
    code, out, err = cli(capsys, "pool", "--findings", str(findings_dir), "--bib", str(bib))
    assert code == 1 and out == ""
    assert err.strip().endswith("alpha2001first.yaml: finding f1: id: duplicate id")


def test_two_studies_with_one_author_date_label_get_letters():
    from metaalliance.dataset.findings import _distinct_labels

    assert _distinct_labels(["Smith et al. (2010)", "Smith et al. (2010)", "Lee (2001)",
                             "Smith et al. (2010)", "Roe (n.d.)", "Roe (n.d.)"],
                            ["smith2010b", "smith2010b", "lee2001", "smith2010a", "roe1", "roe2"]
                            ) == ["Smith et al. (2010b)", "Smith et al. (2010b)", "Lee (2001)",
                                  "Smith et al. (2010a)", "Roe (n.d.-a)", "Roe (n.d.-b)"]


# --- subgroups --------------------------------------------------------------------------------------

SUB = ("r,n,g,c,x1,x2,lvl\n0.3,50,a,1,1,2,p\n0.2,80,a,1,2,4,p\n0.1,60,b,1,3,6,q\n"
       "0.25,70,a,1,4,8,p\n0.05,90,a,1,5,10,p\n0.4,40,a,1,6,12,p\n")


def test_subgroup_with_one_study_is_named(capsys):
    csv("d.csv", SUB)
    code, out, err = cli(capsys, "pool", "--data", "d.csv", *R_N, "--by", "g", "--json")
    assert code == 0
    assert err == ("warning: subgroup g = b: k = 1: tau^2 is set to 0 and heterogeneity cannot "
                   "be assessed (as metafor)\n")
    rows = {row["level"]: row for row in no_nan(out)["subgroups"]}
    assert rows["b"]["k"] == 1 and rows["b"]["tau2"] == 0.0
    code, _, err = cli(capsys, "pool", "--data", "d.csv", *R_N, "--by", "g", "--test", "knha")
    assert (code, err) == (1, "error: d.csv: subgroup g = b has k = 1: the Knapp-Hartung test "
                              "needs k >= 2 in every subgroup\n")


def test_subgroup_warnings_name_each_subgroup():
    with pytest.warns(MetaAllianceWarning) as rec:
        models.subgroups([0.1, 0.2, 0.3, 0.4], [0.01] * 4, ["a", "b", "c", "c"], by="rater")
    assert [str(w.message) for w in rec] == [
        f"subgroup rater = {g}: k = 1: tau^2 is set to 0 and heterogeneity cannot be assessed "
        "(as metafor)" for g in ("a", "b")]


def test_subgroup_variable_with_one_level(capsys):
    csv("d.csv", SUB)
    code, _, err = cli(capsys, "pool", "--data", "d.csv", *R_N, "--by", "c")
    assert (code, err) == (1, "error: d.csv: subgroups: 'c' has 1 level(s); need at least 2\n")


def test_empty_subgroup_levels_do_not_appear():
    """A Categorical level without rows (an empty subgroup) is not a subgroup of the data."""
    g = pd.Categorical(["a", "a", "b", "b"], categories=["a", "b", "never"])
    res = models.subgroups([0.1, 0.2, 0.3, 0.35], [0.01, 0.02, 0.01, 0.02], g, by="g")
    assert [s.level for s in res.subgroups] == ["a", "b"] and res.q_between_df == 1


# --- moderators --------------------------------------------------------------------------------------

def test_constant_numeric_moderator_names_the_column(capsys):
    csv("d.csv", SUB)
    code, _, err = cli(capsys, "pool", "--data", "d.csv", *R_N, "--mods", "~ c")
    assert (code, err) == (1, "error: d.csv: design matrix is not of full rank: column(s) 'c' are "
                              "constant or a linear combination of other columns ('intrcpt')\n")


def test_collinear_moderators_name_the_columns(capsys):
    """metafor drops x2 with a warning (reliability.json); we stop and name both columns."""
    assert REF["collinear"]["warnings"] == ["Redundant predictors dropped from the model."]
    csv("d.csv", SUB)
    code, _, err = cli(capsys, "pool", "--data", "d.csv", *R_N, "--mods", "~ x1 + x2")
    assert (code, err) == (1, "error: d.csv: design matrix is not of full rank: column(s) 'x2' "
                              "are constant or a linear combination of other columns "
                              "('intrcpt', 'x1')\n")


@pytest.mark.parametrize("formula, term", [("~ g2", "g2"), ("~ factor(c)", "factor(c)")])
def test_constant_categorical_moderator_stops_as_r(capsys, formula, term):
    """R: 'contrasts can be applied only to factors with 2 or more levels'."""
    assert REF["one_level_factor"]["error"] == ("contrasts can be applied only to factors with "
                                                "2 or more levels")
    csv("d.csv", SUB.replace("lvl\n", "lvl,g2\n").replace(",p\n", ",p,same\n")
        .replace(",q\n", ",q,same\n"))
    code, _, err = cli(capsys, "pool", "--data", "d.csv", *R_N, "--mods", formula)
    value = "'same'" if term == "g2" else "'1'"
    assert (code, err) == (1, f"error: d.csv: formula: {term} has one level, {value}, in the 6 "
                              "row(s) used; a categorical moderator needs at least 2 levels\n")


def test_factor_level_in_one_row_fits_as_metafor_with_a_warning(capsys):
    ref = REF["single_row_level"]
    lines = ["yi,vi,lvl"] + [f"{y!r},{v!r},{lv}" for y, v, lv in
                             zip(ref["yi"], ref["vi"], ref["lvl"])]
    csv("d.csv", "\n".join(lines) + "\n")
    code, out, err = cli(capsys, "pool", "--data", "d.csv", *YI_VI, "--mods", "~ lvl", "--json",
                         "--control", "optimum")     # reliability.R: metafor to its optimum
    assert code == 0
    assert err == ("warning: formula: lvl: level 'q' occurs in one row only; what the model says "
                   "about it rests on that one study\n")
    res = no_nan(out)
    assert [c["estimate"] for c in res["coefficients"]] == pytest.approx(ref["coefficients"],
                                                                         rel=RTOL)
    assert [c["se"] for c in res["coefficients"]] == pytest.approx(ref["se"], rel=RTOL)
    assert res["tau2"] == pytest.approx(ref["tau2"], rel=RTOL)


def test_text_in_a_numeric_moderator_is_named(capsys):
    csv("d.csv", "r,n,year\n0.3,50,2001\n0.2,80,2001\n0.1,60,n.d.\n0.25,70,2007\n"
                 "0.05,90,2007\n0.15,40,n.d.\n0.22,65,2009\n")
    code, out, err = cli(capsys, "pool", "--data", "d.csv", *R_N, "--mods", "~ year", "--json")
    assert code == 0
    assert [c["name"] for c in no_nan(out)["coefficients"]] == [
        "intrcpt", "year2007", "year2009", "yearn.d."]
    assert err.splitlines()[0] == ("warning: d.csv: moderator year: 'n.d.' is not a number, so "
                                   "year is treated as categorical (one coefficient per value); "
                                   "fix the value if year is meant as a number")


def test_missing_moderator_column(capsys):
    csv("d.csv", SUB)
    code, _, err = cli(capsys, "pool", "--data", "d.csv", *R_N, "--mods", "~ nothere")
    assert (code, err) == (1, "error: d.csv: no column 'nothere' (columns: r, n, g, c, x1, x2, "
                              "lvl, yi, vi)\n")


def test_moderator_api_messages():
    df = pd.DataFrame({"x1": [1.0, 2, 3, 4], "x2": [2.0, 4, 6, 8], "g": ["a"] * 4})
    y, v = [0.1, 0.2, 0.3, 0.25], [0.01, 0.02, 0.015, 0.01]
    with pytest.raises(ModelError) as exc:
        models.meta_regression(y, v, df, "~ x1 + x2")
    assert str(exc.value) == ("design matrix is not of full rank: column(s) 'x2' are constant "
                              "or a linear combination of other columns ('intrcpt', 'x1')")
    with pytest.raises(ModelError) as exc:
        models.meta_regression(y, v, df, "~ g")
    assert str(exc.value) == ("formula: g has one level, 'a', in the 4 row(s) used; a "
                              "categorical moderator needs at least 2 levels")


# --- REML that does not converge -----------------------------------------------------------------

@pytest.fixture
def reml_fails(monkeypatch):
    """Make every iterative tau^2 estimation fail (as test_engine's DL-fallback test)."""
    patch_engine(monkeypatch, "MF_MAXITER", 0)     # metafor's default control fails
    patch_engine(monkeypatch, "MAXITER", 1)
    patch_engine(monkeypatch, "CONV_TOL_ACCEPT", 0.0)
    patch_engine(monkeypatch, "_score_root",
                        lambda method, Yc, *a: (np.zeros(Yc.shape[1]),
                                                np.zeros(Yc.shape[1], bool)))


def test_reml_non_convergence_falls_back_to_dl_and_says_so(capsys, reml_fails):
    csv("d.csv", "r,n\n0.3,50\n0.1,80\n0.45,40\n0.2,120\n-0.05,60\n")
    code, out, err = cli(capsys, "pool", "--data", "d.csv", *R_N, "--json")
    assert code == 0
    assert err == "warning: REML estimation of tau^2 did not converge; using the DL estimate\n"
    res = no_nan(out)
    assert (res["method"], res["method_used"], res["converged"]) == ("REML", "DL", False)
    dl = no_nan(cli(capsys, "pool", "--data", "d.csv", *R_N, "--method", "DL", "--json")[1])
    assert res["tau2"] == pytest.approx(dl["tau2"], rel=1e-12)
    assert "method_used" not in dl
    code, out, err = cli(capsys, "pool", "--data", "d.csv", *R_N)
    assert "Note: REML did not converge; tau^2 is the DL estimate." in out


# --- k = 100,000 ------------------------------------------------------------------------------------

def test_100000_studies_pool(capsys):
    """Simulated (seeded) correlations; the CLI fit equals the API fit and DL's closed form."""
    rng = np.random.default_rng(7)
    k = 100_000
    n = rng.integers(20, 400, k)
    r = np.round(np.tanh(0.25 + rng.normal(0, 0.1, k) + rng.normal(0, 1 / np.sqrt(n - 3))), 6)
    pd.DataFrame({"r": r, "n": n}).to_csv("big.csv", index=False)
    code, out, err = cli(capsys, "pool", "--data", "big.csv", *R_N, "--method", "DL", "--json")
    assert code == 0 and err == ""
    res = no_nan(out)
    y, v = np.arctanh(r), 1 / (n - 3)
    w = 1 / v
    q = np.sum(w * (y - np.sum(w * y) / w.sum()) ** 2)
    tau2 = max(0.0, (q - (k - 1)) / (w.sum() - np.sum(w ** 2) / w.sum()))
    assert res["k"] == k and res["tau2"] == pytest.approx(tau2, rel=1e-9)
    api = models.random_effects(y, v, method="REML")
    assert y.min() <= api.estimate <= y.max() and api.converged


# --- the curated dataset ---------------------------------------------------------------------------

def test_empty_curated_folder(tmp_path, capsys):
    (tmp_path / "f").mkdir()
    (tmp_path / "r.bib").write_text("")
    code, _, err = cli(capsys, "pool", "--findings", "f", "--bib", "r.bib")
    assert (code, err) == (1, "error: f: no findings to analyse\n")


def test_selection_that_leaves_nothing(dataset, capsys):
    findings_dir, bib = dataset
    code, _, err = cli(capsys, "pool", "--findings", str(findings_dir), "--bib", str(bib),
                       "--where", "rater=nobody")
    assert (code, err) == (1, "error: no findings left after the selection "
                              "(--where rater=nobody)\n")


# --- output paths never overwrite the curated data -------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["forest", "--out", "{data}/findings/x.pdf"], "--out {data}/findings/x.pdf: inside {data}, "
     "the curated data; write elsewhere (e.g. --out results/...)"),
    (["funnel", "--out", "{data}/funnel.png"], "--out {data}/funnel.png: inside {data}, the "
     "curated data; write elsewhere (e.g. --out results/...)"),
    (["report", "--out", "{data}"], "--out {data}: inside {data}, the curated data; write "
     "elsewhere (e.g. --out results/...)"),
    (["report", "--out", "{bib}"], "--out {bib}: that is {bib}, the curated bibliography; write "
     "elsewhere"),
    (["forest", "--out", "{bib}"], "--out {bib}: that is {bib}, the curated bibliography; write "
     "elsewhere"),
])
def test_outputs_never_land_in_the_curated_data(capsys, argv, message):
    from metaalliance.dataset.findings import DEFAULT_BIB, DEFAULT_FINDINGS

    data, bib = str(DEFAULT_FINDINGS.parent), str(DEFAULT_BIB)
    before = {p: p.stat().st_mtime_ns for p in DEFAULT_FINDINGS.parent.rglob("*")}
    bib_bytes = DEFAULT_BIB.read_bytes()
    argv = [a.format(data=data, bib=bib) for a in argv]
    code, out, err = cli(capsys, *argv)
    assert (code, out) == (1, "")
    assert err == f"error: {message.format(data=data, bib=bib)}\n"
    assert {p: p.stat().st_mtime_ns for p in DEFAULT_FINDINGS.parent.rglob("*")} == before
    assert DEFAULT_BIB.read_bytes() == bib_bytes


def test_output_never_overwrites_the_run_inputs(dataset, capsys):
    findings_dir, bib = dataset
    code, _, err = cli(capsys, "funnel", "--findings", str(findings_dir), "--bib", str(bib),
                       "--out", str(findings_dir / "f.png"))
    assert code == 1 and err.startswith(f"error: --out {findings_dir / 'f.png'}: inside ")
    csv("d.csv", "r,n\n0.3,50\n0.1,80\n0.2,60\n")
    code, _, err = cli(capsys, "forest", "--data", "d.csv", *R_N, "--out", "d.csv")
    assert (code, err) == (1, "error: --out d.csv: that is d.csv, the input data; write "
                              "elsewhere\n")
    assert Path("d.csv").read_text() == "r,n\n0.3,50\n0.1,80\n0.2,60\n"


# --- the error boundary -----------------------------------------------------------------------------

def test_out_of_memory_is_one_line(capsys, monkeypatch):
    def boom(*a, **k):
        raise MemoryError
    monkeypatch.setattr(models, "random_effects", boom)
    csv("d.csv", "r,n\n0.3,50\n0.1,80\n")
    code, _, err = cli(capsys, "pool", "--data", "d.csv", *R_N)
    assert (code, err) == (1, "error: not enough memory for this analysis; select fewer rows "
                              "(--where) or use a machine with more memory\n")


def test_a_bug_is_one_line_with_exit_code_70(capsys, monkeypatch):
    def bug(*a, **k):
        raise TypeError("unsupported operand")
    monkeypatch.setattr(models, "random_effects", bug)
    csv("d.csv", "r,n\n0.3,50\n0.1,80\n")
    code, _, err = cli(capsys, "pool", "--data", "d.csv", *R_N)
    assert code == 70
    assert err == ("internal error: TypeError: unsupported operand (a bug in metaalliance; "
                   "please report it with the command; METAALLIANCE_DEBUG=1 shows the "
                   "traceback)\n")
    monkeypatch.setenv("METAALLIANCE_DEBUG", "1")
    with pytest.raises(TypeError):
        main(["pool", "--data", "d.csv", *R_N])


def test_where_with_code_is_a_plain_value(capsys):
    csv("d.csv", "r,n,g\n0.1,50,a\n0.2,60,b\n")
    code, out, err = cli(capsys, "pool", "--data", "d.csv", *R_N,
                         "--where", "g=__import__('os').system('echo owned')")
    assert (code, out) == (1, "")
    assert err == "error: d.csv: no rows left after the selection\n"


# --- the Python API on the same inputs ------------------------------------------------------------

@pytest.mark.parametrize("yi, vi, message", [
    ([], [], "no studies: yi is empty"),
    ([0.1, math.inf], [0.01, 0.02], "yi has missing or non-finite values at position(s) 2"),
    ([0.1, 0.2], [0.01, math.nan], "vi has missing or non-finite values at position(s) 2"),
    ([0.1, 0.2], [0.0, 0.01], "vi must be > 0; not so at position(s) 1"),
    ([0.1, 0.2], [0.01, -0.01], "vi must be > 0; not so at position(s) 2"),
    (["0.1", "x"], [0.01, 0.02], "yi and vi must be numeric"),
])
@pytest.mark.parametrize("fn", ["random_effects", "subgroups"])
def test_api_refuses_bad_vectors(fn, yi, vi, message):
    extra = {"random_effects": (), "subgroups": (["a"] * len(yi),)}[fn]
    with pytest.raises(DataError) as exc:
        getattr(models, fn)(yi, vi, *extra)
    assert str(exc.value) == message


def test_api_k1_identical_and_extreme():
    with pytest.warns(MetaAllianceWarning, match="k = 1"):
        assert models.random_effects([0.3], [0.01]).tau2 == 0.0
    res = models.random_effects(REF["identical"]["yi"], REF["identical"]["vi"])
    assert (res.tau2, res.i2) == (0.0, 0.0)
    with pytest.raises(ModelError, match="Knapp-Hartung adjustment is undefined"):
        models.random_effects(REF["identical"]["yi"], REF["identical"]["vi"], test="knha")
    with pytest.warns(MetaAllianceWarning, match="times the smallest"):
        res = models.random_effects(REF["extreme_vi"]["yi"], REF["extreme_vi"]["vi"])
    assert res.estimate == pytest.approx(REF["extreme_vi"]["methods"]["REML"]["estimate"],
                                         rel=RTOL)


def test_option_errors_are_option_errors(capsys):
    csv("d.csv", "r,n\n0.3,50\n0.1,80\n")
    with pytest.raises(SystemExit) as exc:          # argparse: usage error, exit code 2
        main(["pool", "--data", "d.csv", *R_N, "--level", "150"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.endswith("error: argument --level: '150' must be a "
                                            "percentage between 50 and 100 (e.g. 95)\n")
    with pytest.raises(OptionError) as exc:
        models.random_effects([0.1, 0.2], [0.01, 0.02], level=150)
    assert str(exc.value) == "level: 150 must be a percentage between 50 and 100 (e.g. 95)"
    code, _, err = cli(capsys, "pool", "--data", "d.csv", "--r", "r")
    assert (code, err) == (1, "error: --data needs either --r COL --n COL or --yi COL --vi COL\n")
    with pytest.raises(OptionError):
        models.random_effects([0.1, 0.2], [0.01, 0.02], method="reml")


# --- found by fuzzing (tests/test_fuzz_cli.py) -----------------------------------------------------

def test_bias_with_effects_on_a_line_has_no_nan(capsys):
    """lm() gives se = 0 and t = NaN here; PET-PEESE becomes a note, the JSON stays valid."""
    csv("d.csv", "yi,vi\n0,1\n0,1\n0,0.5\n")
    code, out, err = cli(capsys, "bias", "--data", "d.csv", *YI_VI, "--json")
    assert code == 0
    res = no_nan(out)
    assert res["pet_peese"] is None
    assert ("PET-PEESE: the effect sizes lie exactly on a line in sei (e.g. identical effects), "
            "so its t-tests are undefined") in res["notes"]
    code, out, _ = cli(capsys, "bias", "--data", "d.csv", *YI_VI)
    assert code == 0 and "nan" not in out.split()


def test_where_keeping_no_row_with_a_required_column(capsys):
    csv("d.csv", "r,n,year,study\n0.2,50,,X\n")
    code, _, err = cli(capsys, "sensitivity", "--data", "d.csv", *R_N, "--where", "study=A",
                       "--order", "year")
    assert (code, err) == (1, "error: d.csv: no rows left after the selection\n")


def test_yaml_alias_bomb_is_refused_quickly(dataset, capsys):
    """Ten lines of aliases would expand to 9^9 values (and a 2 GB problem line)."""
    findings_dir, bib = dataset
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    (findings_dir / "alpha2001first.yaml").write_text("\n".join(lines + ["population: *i"]))
    code, out, err = cli(capsys, "validate", "--findings", str(findings_dir), "--bib", str(bib))
    assert code == 1 and len(out) + len(err) < 2000
    assert ("alpha2001first.yaml: cannot parse YAML (line 2, column 8): alias *a is not allowed "
            "in a study file (write the values out)") in out + err


def test_long_values_are_cut_in_problem_lines(dataset, capsys):
    findings_dir, bib = dataset
    path = findings_dir / "alpha2001first.yaml"
    path.write_text(path.read_text().replace("population: adult", "population: " + "x" * 5000))
    code, out, err = cli(capsys, "validate", "--findings", str(findings_dir), "--bib", str(bib))
    line = next(ln for ln in (out + err).splitlines() if ": population: " in ln)
    assert code == 1 and line.split(": population: ")[1].startswith("'" + "x" * 56 + "...")
    assert len(line) < 400


def test_yaml_size_is_bounded(dataset, capsys):
    from metaalliance.dataset import findings

    findings_dir, bib = dataset
    (findings_dir / "alpha2001first.yaml").write_text("note: " + "x" * findings.MAX_FILE_BYTES)
    code, out, err = cli(capsys, "validate", "--findings", str(findings_dir), "--bib", str(bib))
    assert code == 1
    assert (f"alpha2001first.yaml: file is larger than {findings.MAX_FILE_BYTES} bytes"
            in out + err)


def test_output_through_a_symlink_into_the_data_is_refused(capsys, tmp_path):
    from metaalliance.dataset.findings import DEFAULT_FINDINGS

    target = sorted(DEFAULT_FINDINGS.glob("*.yaml"))[0]
    before = target.read_bytes()
    (tmp_path / "fig.pdf").symlink_to(target)
    code, _, err = cli(capsys, "forest", "--out", "fig.pdf")
    assert code == 1 and err.startswith("error: --out fig.pdf: inside ")
    assert target.read_bytes() == before


def test_huge_moderator_values_are_named(capsys):
    csv("d.csv", "yi,vi,x\n0.2,0.01,1e200\n0.1,0.02,1\n0.3,0.01,2\n0.25,0.03,inf\n")
    code, _, err = cli(capsys, "pool", "--data", "d.csv", *YI_VI, "--mods", "~ x")
    assert (code, err) == (1, "error: d.csv: formula: x has a value beyond +-1e+50 at "
                              "position(s) 1, 4; rescale it (e.g. thousands instead of units)\n")


@pytest.mark.parametrize("yi, vi, message", [
    ([1e308, 0.1], [0.01, 0.02], "yi must lie within +-1e+50 (beyond, the weighted sums "
                                 "overflow); not so at position(s) 1"),
    ([0.1, 0.2], [0.01, 5e-324], "vi must lie between 1e-100 and 1e+100 (beyond, the weights "
                                 "1/vi overflow); not so at position(s) 2"),
    ([0.1, 0.2], [1e101, 0.01], "vi must lie between 1e-100 and 1e+100 (beyond, the weights "
                                "1/vi overflow); not so at position(s) 1"),
])
def test_api_refuses_numbers_that_overflow(yi, vi, message):
    with pytest.raises(DataError) as exc:
        models.random_effects(yi, vi)
    assert str(exc.value) == message
    with pytest.raises(DataError, match="^three_level: (yi|vi) must lie"):
        models.three_level(yi, vi, ["a", "b"])


def test_na_in_a_text_column_is_missing_as_in_r(capsys):
    """Found by fuzzing: a subgroup value 'NA' or 'nan' was a level called NA (R's read.csv
    reads it as missing, as we do in numeric columns)."""
    csv("d.csv", "r,n,g,study\n0.3,50,a,S1\n0.2,80,NA,S2\n0.1,60,b,NA\n0.25,70,nan,S4\n"
                 "0.05,90,b,S5\n0.4,40,a,S6\n")
    code, out, err = cli(capsys, "pool", "--data", "d.csv", *R_N, "--by", "g", "--json")
    assert code == 0
    assert err == "warning: d.csv: omitted 2 row(s) with a missing value in g (rows 3, 5)\n"
    res = no_nan(out)
    assert [s["level"] for s in res["subgroups"]] == ["a", "b"] and res["omitted"] == 2
    code, out, _ = cli(capsys, "sensitivity", "--data", "d.csv", *R_N, "--json")
    assert [row["label"] for row in no_nan(out)["leave_one_out"]][2] == "row 4"


def test_messages_quoting_data_stay_one_line(capsys):
    """A subgroup value with a line break (a quoted CSV cell) is escaped in messages."""
    csv("d.csv", 'r,n,g\n0.3,50,a\n0.2,80,a\n0.1,60,"b\nc"\n')
    code, _, err = cli(capsys, "pool", "--data", "d.csv", *R_N, "--by", "g")
    assert code == 0
    assert err == ("warning: subgroup g = b\\nc: k = 1: tau^2 is set to 0 and heterogeneity "
                   "cannot be assessed (as metafor)\n")
    code, _, err = cli(capsys, "pool", "--data", "d.csv", *R_N, "--by", "g", "--test", "knha")
    assert (code, err) == (1, "error: d.csv: subgroup g = b\\nc has k = 1: the Knapp-Hartung "
                              "test needs k >= 2 in every subgroup\n")


def test_three_level_with_a_singular_information_matrix(capsys):
    """Found by fuzzing: identical effects made the 2 x 2 information matrix singular but
    positive definite by rounding; Newton's solve raised LinAlgError (exit 70)."""
    csv("d.csv", "yi,x,g,vi\n0,0,a,1\n0,0,b,1\n0,1,a,0.875\n")
    code, out, err = cli(capsys, "pool", "--data", "d.csv", *YI_VI, "--cluster", "g",
                         "--mods", "~ x", "--json")
    assert code == 0
    res = no_nan(out)
    assert res["sigma2"] == [0.0, 0.0] and res["converged"] is True
    assert res["se"] == pytest.approx(math.sqrt(0.5), rel=1e-9)   # two rows with x = 0, vi = 1


def test_reml_where_metafor_fisher_scoring_fails(capsys):
    """A real non-convergence: on this near-saturated meta-regression metafor's default Fisher
    scoring stops with an error (reliability.json); we warn, take the REML optimum of the
    safeguarded search (= metafor with step halving) and the JSON says so in "fallback"."""
    ref = REF["fisher_scoring_fails"]
    assert ref["error"].startswith("Fisher scoring algorithm did not converge.")
    d = ref["data"]
    lines = ["yi,vi,a,b,c,x"] + [",".join(repr(float(d[c][i])) for c in ("yi", "vi", "a", "b",
                                                                          "c", "x"))
                                 for i in range(len(d["yi"]))]
    csv("d.csv", "\n".join(lines) + "\n")
    code, out, err = cli(capsys, "pool", "--data", "d.csv", *YI_VI, "--mods", "~ a + b + c + x",
                         "--json")
    assert code == 0
    why = ("metafor's Fisher scoring does not converge within 100 iterations (metafor stops: "
           "\"Fisher scoring algorithm did not converge\"); tau^2 is the REML estimate found by "
           "the safeguarded search of control 'optimum'")
    assert err == f"warning: REML: {why}\n"
    res = no_nan(out)
    assert (res["method"], res["fallback"]) == ("REML", why)
    assert res["tau2"] == pytest.approx(ref["tau2"], rel=RTOL)
    assert [c["estimate"] for c in res["coefficients"]] == pytest.approx(ref["coefficients"],
                                                                         rel=RTOL)


@pytest.mark.parametrize("yi, what", [
    ("0,2,0,0", "a matrix of the fit is numerically singular"),
    ("0,0,0,0", "the results would not be finite numbers"),
])
def test_weights_beyond_double_precision_stop_the_model(capsys, yi, what):
    """Found by fuzzing: vi = 1.3e-31 next to vi = 1 in a meta-regression gave LinAlgError
    (exit 70) or NaN standard errors."""
    y = yi.split(",")
    csv("d.csv", "yi,x,g,vi\n" + "".join(f"{a},{x},{g},{v}\n" for a, x, g, v in zip(
        y, (1, 0, 0, 1), ("a", "a", "a", "0"), (1, 1, 1.2892022125829929e-31, 1))))
    code, out, err = cli(capsys, "pool", "--data", "d.csv", *YI_VI, "--mods", "~ g + x")
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == (
        f"error: d.csv: the model cannot be fitted reliably: {what}; the largest sampling "
        "variance is 7.76e+30 times the smallest, beyond what double precision resolves (check "
        "the studies with extreme variances)")
