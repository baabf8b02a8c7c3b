"""Moderator formulas (engine/formulas.py, through formulaic) against R's model.matrix / rma().

Numbers from tests/reference/formulas.json, written by tests/reference/formulas.R
(rma(yi, vi, mods = formula, data = dat.bcg), REML, metafor's default control).
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metaalliance.engine import models

REF = json.loads((Path(__file__).parent / "reference" / "formulas.json").read_text())
#: the project's tolerance (the design matrices are exact; the fits are metafor's REML)
RTOL = 1e-6
DATA = pd.DataFrame({k: REF["data"][k] for k in ("alloc", "ablat", "year")})


@pytest.mark.parametrize("c", REF["cases"], ids=[c["py_formula"] for c in REF["cases"]])
def test_design_matrix_and_fit_as_metafor(c):
    X, names, keep = models.design_matrix(DATA, c["py_formula"])
    assert keep.all()
    np.testing.assert_allclose(X, np.asarray(c["X"], dtype=float), rtol=1e-12, atol=1e-12)
    if "center(" not in c["py_formula"]:
        expected = [n.replace("factor(alloc)", "C(alloc)") if "C(alloc)" in c["py_formula"]
                    else n for n in c["names"]]
        expected = [n.replace("I(ablat^2)", "I(ablat ** 2)") for n in expected]
        assert names == expected
    res = models.meta_regression(REF["data"]["yi"], REF["data"]["vi"], DATA, c["py_formula"],
                                 measure="generic")
    np.testing.assert_allclose([b.estimate for b in res.coefficients], c["beta"], rtol=RTOL)
    np.testing.assert_allclose([b.se for b in res.coefficients], c["se"], rtol=RTOL)
    np.testing.assert_allclose(res.tau2, c["tau2"], rtol=RTOL)
    np.testing.assert_allclose(res.qm, c["QM"], rtol=RTOL)


def test_missing_rows_are_zero_and_not_kept():
    df = DATA.copy()
    df.loc[2, "ablat"] = np.nan
    X, names, keep = models.design_matrix(df, "~ alloc * ablat")
    assert keep.tolist() == [i != 2 for i in range(len(df))]
    assert not X[2].any()
