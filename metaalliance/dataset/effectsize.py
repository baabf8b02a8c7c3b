"""Effect sizes: reported statistics -> r -> Fisher z.

All functions are pure and vectorise over numpy arrays. Conversions follow DATA.md:

* t with df            r = t / sqrt(t^2 + df)
* F(1, df)             r = sign * sqrt(F / (F + df))          (sign from the text)
* d with n1, n2        r = d / sqrt(d^2 + a),  a = (n1 + n2)^2 / (n1 n2)
* chi2(1) with n       r = sign * sqrt(chi2 / n)
* odds ratio           d = ln(OR) sqrt(3) / pi, then as d     (approximate)
* z with n             r = z / sqrt(n)                         (approximate)
* r, partial r, Spearman's rho and a single-predictor beta are taken as reported.

Examples
--------
>>> round(float(t_to_r(2.4, 48)), 6)
0.327327
>>> round(float(f_to_r(4.0, 96)), 6)
0.2
>>> round(float(r_to_z(0.5)), 6)
0.549306
"""

from __future__ import annotations

import math

import numpy as np

from metaalliance.errors import DataError

__all__ = [
    "r_to_z", "z_to_r", "vi_from_n", "t_to_r", "f_to_r", "d_to_r", "chi2_to_r",
    "or_to_r", "z_stat_to_r", "convert",
]


def r_to_z(r):
    """Fisher's z = atanh(r)."""
    return np.arctanh(r)


def z_to_r(z):
    """Back-transform Fisher's z to r (tanh); for display only."""
    return np.tanh(z)


def vi_from_n(n):
    """Sampling variance of Fisher's z: 1 / (n - 3)."""
    return 1.0 / (np.asarray(n, dtype=float) - 3.0)


def t_to_r(t, df):
    """r from a t statistic with df degrees of freedom."""
    t = np.asarray(t, dtype=float)
    return t / np.hypot(t, np.sqrt(df))  # hypot: no overflow for huge t


def f_to_r(f, df, sign=1):
    """r from F(1, df), signed by ``sign`` (+1 or -1) as the text reports the direction."""
    f = np.asarray(f, dtype=float)
    return np.sign(sign) * np.sqrt(f / (f + df))


def d_to_r(d, n1, n2):
    """r from a standardised mean difference with group sizes n1 and n2."""
    d = np.asarray(d, dtype=float)
    a = (n1 + n2) ** 2 / (n1 * n2)
    return d / np.sqrt(d * d + a)


def chi2_to_r(chi2, n, sign=1):
    """r (phi) from chi2 with 1 df and total n, signed by ``sign``."""
    return np.sign(sign) * np.sqrt(np.asarray(chi2, dtype=float) / n)


def or_to_r(odds_ratio, n1, n2):
    """r from an odds ratio via the logit method d = ln(OR) sqrt(3)/pi (approximate)."""
    d = np.log(np.asarray(odds_ratio, dtype=float)) * math.sqrt(3.0) / math.pi
    return d_to_r(d, n1, n2)


def z_stat_to_r(z, n):
    """r from a standard normal test statistic and n: r = z / sqrt(n) (approximate)."""
    return np.asarray(z, dtype=float) / np.sqrt(n)


#: statistic type -> (function of (value, fields, n) returning r, description)
def convert(stat_type: str, value: float, *, n: int | None = None, df: float | None = None,
            n1: int | None = None, n2: int | None = None, sign: int | None = None) -> float:
    """Convert one reported statistic to r (in the paper's own sign convention).

    Raises DataError naming the missing field when the statistic lacks what it needs.

    >>> round(convert("t", 2.4, df=48), 6)
    0.327327
    >>> convert("F", 4.0, df=96, sign=-1)
    -0.2
    """
    def need(name, val):
        if val is None:
            raise DataError(f"statistic: {stat_type} needs {name}")
        return val

    value = float(value)
    if stat_type in ("r", "partial_r", "spearman_rho", "beta"):
        r = value
    elif stat_type == "t":
        r = t_to_r(value, need("df", df))
    elif stat_type == "F":
        if value < 0:
            raise DataError("statistic: F must be >= 0 (give the direction in sign)")
        r = f_to_r(value, need("df", df), need("sign", sign))
    elif stat_type == "chi2":
        if value < 0:
            raise DataError("statistic: chi2 must be >= 0 (give the direction in sign)")
        r = chi2_to_r(value, need("n", n), need("sign", sign))
    elif stat_type == "d":
        r = d_to_r(value, need("n1", n1), need("n2", n2))
    elif stat_type == "or":
        if value <= 0:
            raise DataError("statistic: an odds ratio must be > 0")
        r = or_to_r(value, need("n1", n1), need("n2", n2))
    elif stat_type == "z":
        r = z_stat_to_r(value, need("n", n))
    else:
        raise DataError(f"statistic: unknown type {stat_type!r}")
    return float(r)
