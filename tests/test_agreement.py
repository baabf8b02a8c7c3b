"""Double extraction: Cohen's kappa, ICC(2,1) and `metaalliance agree`."""

import json
from fractions import Fraction

import numpy as np
import pytest

from conftest import snapshot
from metaalliance.analyses import agreement
from metaalliance.cli import main
from metaalliance.dataset import findings, intake

# Shrout, P. E., & Fleiss, J. L. (1979). Intraclass correlations: uses in assessing rater
# reliability. Psychological Bulletin, 86(2), 420-428. Table 2: four judges rate six targets.
SHROUT_FLEISS_TABLE_2 = [[9, 2, 5, 8],
                         [6, 1, 3, 2],
                         [8, 4, 6, 8],
                         [7, 1, 2, 6],
                         [10, 5, 6, 9],
                         [6, 2, 4, 7]]
# Table 3 (mean squares of the two-way ANOVA) and Table 4 (the six ICCs), as printed
SHROUT_FLEISS_MS = {"bms": 11.24, "wms": 6.26, "jms": 32.49, "ems": 1.02}
SHROUT_FLEISS_ICC = {"icc1_1": 0.17, "icc2_1": 0.29, "icc3_1": 0.71,
                     "icc1_k": 0.44, "icc2_k": 0.62, "icc3_k": 0.91}


def _exact_icc2_1(table) -> Fraction:
    """ICC(2,1) by the paper's formula in exact rational arithmetic (independent of numpy)."""
    n, k = len(table), len(table[0])
    x = [[Fraction(v) for v in row] for row in table]
    grand = sum(map(sum, x)) / (n * k)
    rows = [sum(r) / k for r in x]
    cols = [sum(x[i][j] for i in range(n)) / n for j in range(k)]
    ss_t = sum((v - grand) ** 2 for r in x for v in r)
    ss_r = k * sum((m - grand) ** 2 for m in rows)
    ss_c = n * sum((m - grand) ** 2 for m in cols)
    bms, jms = ss_r / (n - 1), ss_c / (k - 1)
    ems = (ss_t - ss_r - ss_c) / ((n - 1) * (k - 1))
    return (bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n)


def test_icc_equals_shrout_fleiss_1979_tables_3_and_4():
    res = agreement.icc(SHROUT_FLEISS_TABLE_2)
    # the printed values, at the precision they are printed (two decimals)
    for key, value in SHROUT_FLEISS_MS.items():
        assert getattr(res, key) == pytest.approx(value, abs=0.005)
    for key, value in SHROUT_FLEISS_ICC.items():
        assert getattr(res, key) == pytest.approx(value, abs=0.005)
    # ICC(2,1) to 1e-6 against the formula evaluated exactly on the published table (= 184/635)
    exact = _exact_icc2_1(SHROUT_FLEISS_TABLE_2)
    assert exact == Fraction(184, 635)
    assert res.icc2_1 == pytest.approx(float(exact), rel=1e-6)


def test_icc_is_one_when_raters_agree_exactly():
    r = np.array([0.1, 0.3, -0.2, 0.45])
    assert agreement.icc(np.column_stack([r, r])).icc2_1 == pytest.approx(1.0)


def test_kappa_equals_statsmodels_and_a_hand_worked_example():
    from statsmodels.stats.inter_rater import cohens_kappa

    # 50 items, two raters: 20 yes-yes, 5 yes-no, 10 no-yes, 15 no-no:
    # po = 35/50 = 0.7, pe = (25*30 + 25*20)/2500 = 0.5, kappa = (0.7 - 0.5)/0.5 = 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert agreement.kappa(a, b) == pytest.approx(0.4, rel=1e-12)
    rng = np.random.default_rng(3)
    codes = ["client", "therapist", "observer"]
    a = list(rng.choice(codes, 40))
    b = [x if rng.random() < 0.7 else rng.choice(codes) for x in a]
    table = np.array([[sum(1 for x, y in zip(a, b) if x == i and y == j) for j in codes]
                      for i in codes], dtype=float)
    assert agreement.kappa(a, b) == pytest.approx(cohens_kappa(table).kappa, rel=1e-12)


def test_kappa_is_null_when_there_is_one_code_only():
    assert agreement.kappa(["WAI"] * 5, ["WAI"] * 5) is None


def _shipped_records(citekeys):
    ds = findings.read_dataset()
    return [r for r in intake.flat_records(ds) if r["citekey"] in citekeys]


THREE = ("marcottebeaumier2021role", "gomezpenedo2020association", "chang2019association")


def test_compare_counts_every_deliberate_change():
    a = _shipped_records(THREE)
    b = [dict(r) for r in a]
    b[0]["rater"] = "therapist"           # one categorical disagreement
    b[1]["n"] = b[1]["n"] + 10            # one number
    b = b[:-1]                            # one finding reviewer B did not extract
    res = agreement.compare(a, b)
    assert res["matched"] == len(a) - 1
    assert res["only_in_a"] == [{"citekey": a[-1]["citekey"], "id": a[-1]["id"]}]
    assert res["only_in_b"] == []
    fields = {(d["citekey"], d["id"], d["field"]) for d in res["discrepancies"]}
    assert (a[0]["citekey"], a[0]["id"], "rater") in fields
    assert (a[1]["citekey"], a[1]["id"], "n") in fields
    assert res["fields"]["n"]["max_difference"] == 10
    assert res["fields"]["rater"]["agreement"] == pytest.approx(1 - 1 / res["matched"])
    # the changed n belongs to a reported r, whose conversion does not use n: r agrees
    assert len(res["discrepancies"]) == 2


@pytest.fixture
def two_reviewers(tmp_path):
    """Reviewer A = the shipped findings of three studies, exported; reviewer B = the same sheet
    with three cells changed deliberately (a rater, an n and a statistic value)."""
    import openpyxl

    a = tmp_path / "a.xlsx"
    assert main(["export", "--sheet", str(a)]) == 0
    wb = openpyxl.load_workbook(a)
    ws = wb["findings"]
    header = [c.value for c in ws[1]]
    ck = header.index("citekey") + 1
    for r in range(ws.max_row, 1, -1):
        if ws.cell(r, ck).value not in THREE:
            ws.delete_rows(r)
    wb.save(a)
    wb = openpyxl.load_workbook(a)
    ws = wb["findings"]
    ws.cell(2, header.index("rater") + 1, "therapist")
    ws.cell(3, header.index("n") + 1, ws.cell(3, header.index("n") + 1).value + 5)
    ws.cell(4, header.index("value") + 1, -ws.cell(4, header.index("value") + 1).value)
    b = tmp_path / "b.xlsx"
    wb.save(b)
    return a, b


def test_agree_on_two_sheets(two_reviewers, capsys):
    a, b = two_reviewers
    assert main(["agree", str(a), str(b), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["matched"] == 7 and res["only_in_a"] == res["only_in_b"] == []
    changed = {d["field"] for d in res["discrepancies"]}
    assert {"rater", "n", "value", "r"} <= changed
    assert res["fields"]["instrument"] == {"kind": "categorical", "n": 7, "agreement": 1.0,
                                           "kappa": 1.0}
    assert res["fields"]["rater"]["agreement"] == pytest.approx(6 / 7)
    assert -1 <= res["icc_r"] < 1


def test_agree_on_a_folder_and_itself_is_perfect(capsys):
    assert main(["agree", str(findings.DEFAULT_FINDINGS), str(findings.DEFAULT_FINDINGS),
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["discrepancies"] == [] and res["icc_r"] == pytest.approx(1.0)
    assert res["matched"] == len(findings.load())


def test_agree_with_nothing_in_common_is_one_line(two_reviewers, tmp_path, capsys):
    a, _ = two_reviewers
    other = tmp_path / "other.csv"
    other.write_text("citekey,id,n,stat_type,value\nzeta2019other,f1,50,r,0.2\n")
    before = snapshot(tmp_path)
    assert main(["agree", str(a), str(other)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {findings.display_path(a)}, {findings.display_path(other)}: no "
                   "finding in common (findings are matched on citekey and id)"]
    assert snapshot(tmp_path) == before


def test_agree_needs_ids(tmp_path, capsys):
    a = tmp_path / "a.csv"
    a.write_text("citekey,n,stat_type,value\nzeta2019other,50,r,0.2\n")
    assert main(["agree", str(a), str(a)]) == 1
    assert capsys.readouterr().err == (f"error: {findings.display_path(a)}: row 2: id: missing "
                                       "(agree matches findings on citekey and id; give every "
                                       "row both)\n")
