"""Conversions of DATA.md, each against a value worked by hand (shown in the comment)."""

import math

import numpy as np
import pytest

from metaalliance.dataset import effectsize as es
from metaalliance.errors import DataError

EXACT = 1e-12


def test_t_to_r_hand_worked():
    # 2.4 / sqrt(2.4^2 + 48) = 2.4 / sqrt(53.76) = 0.3273268...
    assert es.t_to_r(2.4, 48) == pytest.approx(2.4 / math.sqrt(53.76), rel=EXACT)
    assert es.t_to_r(2.4, 48) == pytest.approx(0.3273268, abs=1e-7)


def test_f_to_r_signed():
    # sqrt(4 / (4 + 96)) = 0.2, sign from the text
    assert es.f_to_r(4.0, 96) == pytest.approx(0.2, rel=EXACT)
    assert es.f_to_r(4.0, 96, sign=-1) == pytest.approx(-0.2, rel=EXACT)


def test_f_equals_t_squared():
    # F(1, df) = t^2 gives the same |r|
    assert es.f_to_r(2.4 ** 2, 48) == pytest.approx(es.t_to_r(2.4, 48), rel=EXACT)


def test_d_to_r_equal_groups_borenstein():
    # Borenstein et al. (2009), Introduction to Meta-Analysis, eq. 7.7 with n1 = n2: a = 4,
    # d = 0.5 -> r = 0.5 / sqrt(4.25) = 0.242535...
    assert es.d_to_r(0.5, 50, 50) == pytest.approx(0.5 / math.sqrt(4.25), rel=EXACT)


def test_d_to_r_unequal_groups():
    # a = (30 + 10)^2 / (30 * 10) = 5.3333; r = 0.8 / sqrt(0.64 + 5.3333) = 0.327327
    assert es.d_to_r(0.8, 30, 10) == pytest.approx(0.8 / math.sqrt(0.64 + 1600 / 300), rel=EXACT)


def test_chi2_to_r_phi():
    # phi = sqrt(6.25 / 100) = 0.25
    assert es.chi2_to_r(6.25, 100) == pytest.approx(0.25, rel=EXACT)
    assert es.chi2_to_r(6.25, 100, sign=-1) == pytest.approx(-0.25, rel=EXACT)


def test_or_to_r_logit_method():
    # OR = e: d = sqrt(3)/pi = 0.551329; with n1 = n2, r = d / sqrt(d^2 + 4) = 0.266004
    d = math.sqrt(3) / math.pi
    assert es.or_to_r(math.e, 20, 20) == pytest.approx(d / math.sqrt(d * d + 4), rel=EXACT)


def test_fisher_z_and_variance():
    # atanh(0.5) = 0.5 * ln(3) = 0.549306; vi = 1 / (103 - 3) = 0.01
    assert es.r_to_z(0.5) == pytest.approx(0.5 * math.log(3), rel=EXACT)
    assert es.vi_from_n(103) == pytest.approx(0.01, rel=EXACT)
    assert es.z_to_r(es.r_to_z(0.278)) == pytest.approx(0.278, rel=EXACT)


def test_z_to_r_is_monotone():
    z = np.linspace(-5, 5, 1001)
    assert np.all(np.diff(es.z_to_r(z)) > 0)


@pytest.mark.parametrize("stat,kwargs,message", [
    ("t", {}, "statistic: t needs df"),
    ("F", {"df": 10}, "statistic: F needs sign"),
    ("d", {"n1": 10}, "statistic: d needs n2"),
    ("chi2", {"sign": 1}, "statistic: chi2 needs n"),
    ("kappa", {}, "statistic: unknown type 'kappa'"),
])
def test_convert_names_what_is_missing(stat, kwargs, message):
    with pytest.raises(DataError) as err:
        es.convert(stat, 2.0, **kwargs)
    assert str(err.value) == message


def test_convert_passes_correlations_through():
    for kind in ("r", "partial_r", "spearman_rho", "beta"):
        assert es.convert(kind, -0.31) == -0.31
