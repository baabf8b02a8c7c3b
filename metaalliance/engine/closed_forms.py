"""Exact closed forms of the normal and the integer-df chi^2 distribution, on Python floats.

What a single random-effects fit needs (the z test's p-value and critical value, Cochran's Q
p-value, the chi^2 quantiles of the Q-profile CI), without ``scipy.special``, whose import
costs ~0.2 s of a command's start-up. ``engine/distributions.py`` calls these for scalars and
small arrays and falls back to scipy.special where a function returns None (outside the range
in which tests/test_distributions.py shows agreement with scipy.special to 1e-13 relative).

- ``ndtr``: cephes' formula (scipy's ``ndtr``): ``0.5 + 0.5 erf(x/sqrt 2)`` near 0,
  ``0.5 erfc(|x|/sqrt 2)`` in the tails, through libm's ``erf``/``erfc``.
- ``ndtri``: ``statistics.NormalDist().inv_cdf``, Wichura's AS241 (also R's ``qnorm``),
  accurate to about 1e-16 relative.
- chi^2 with integer df <= ``MAX_DF``: the upper tail is a finite sum of positive terms
  (df even: the Poisson sum ``exp(-x/2) sum_{j<df/2} (x/2)^j / j!``; df odd: ``erfc(sqrt(x/2))
  + sqrt(2x/pi) exp(-x/2) sum_{j=1}^{(df-1)/2} x^(j-1) / (1 3 ... (2j-1))``), so no
  cancellation; the lower tail, where it is the smaller one, is the series of the regularised
  lower incomplete gamma function ``P(a, y) = y^a e^-y / Gamma(a+1) sum_n y^n / ((a+1)..(a+n))``
  (positive terms too); the other tail is one minus the smaller (>= 0.5, so no cancellation).
  Quantiles (of tail probabilities up to 0.5: a fit asks for alpha/2) are the roots of these
  (safeguarded Newton steps inside a bracket, to the last bits), so they are as accurate as
  the functions.

In the far tails the functions inherit the conditioning of ``exp(-x^2/2)`` and ``exp(-x/2)``:
the rounding of x itself moves the normal tail by ~x^2 eps and the chi^2 tail by ~x/2 eps
relative (cephes has the same), so the 1e-13 agreement holds for |x| <= 15 (normal) and
x <= 100 (chi^2), and ~x^2 eps resp. ~x eps beyond. Checked against 40-digit mpmath too:
the closed forms are as close to it as scipy.special is, or closer, and they equal R's
``qnorm``/``pchisq`` bit for bit on the default fit of the curated data.
"""

from __future__ import annotations

import math

#: chi^2 closed forms for integer df up to this (at most 100 terms; the rounding error of a
#: sum of n positive terms is at most ~2n ulp, 4.4e-14 here)
MAX_DF = 200
#: ... and for x/2 up to this (exp(-x/2) stays a normal float; beyond, scipy.special)
MAX_HALF_X = 700.0
_SQRT1_2 = math.sqrt(0.5)
_SQRT_PI = math.sqrt(math.pi)
_EPS = 2.0 ** -52
_NORMAL = None


def ndtr(a: float) -> float:
    """Standard normal cdf, as cephes' ``ndtr`` computes it."""
    if a != a:
        return math.nan
    x = a * _SQRT1_2
    z = abs(x)
    if z < _SQRT1_2:
        return 0.5 + 0.5 * math.erf(x)
    y = 0.5 * math.erfc(z)
    return 1.0 - y if x > 0 else y


def ndtri(p: float) -> float:
    """Standard normal quantile (AS241 through ``statistics.NormalDist``); +-inf at 0 and 1."""
    global _NORMAL
    if p != p or p < 0.0 or p > 1.0:
        return math.nan
    if p == 0.0:
        return -math.inf
    if p == 1.0:
        return math.inf
    if _NORMAL is None:
        from statistics import NormalDist

        _NORMAL = NormalDist()
    return _NORMAL.inv_cdf(p)


# --- chi^2 with integer df -----------------------------------------------------------------

def _int_df(df: float) -> int | None:
    if df == df and 1 <= df <= MAX_DF and df == int(df):
        return int(df)
    return None


def _gamma_half(df: int) -> float:
    """Gamma(df/2 + 1): (df/2)! for even df, (df)!! / 2^((df+1)/2) sqrt(pi) for odd df
    (exact integers, one rounding, then one multiplication)."""
    if df % 2 == 0:
        return float(math.factorial(df // 2))
    return math.ldexp(float(math.prod(range(df, 0, -2))), -(df + 1) // 2) * _SQRT_PI


def _upper(x: float, df: int) -> float:
    """Q(df/2, x/2), the chi^2 upper tail, as its finite sum (0 <= x/2 <= MAX_HALF_X)."""
    y = 0.5 * x
    if df % 2 == 0:
        term = math.exp(-y)
        total = term
        for j in range(1, df // 2):
            term *= y / j
            total += term
        return total
    total = math.erfc(math.sqrt(y))
    if df > 1:
        term = 2.0 * math.sqrt(y / math.pi) * math.exp(-y)
        acc = term
        for j in range(2, (df - 1) // 2 + 1):
            term *= x / (2 * j - 1)
            acc += term
        total += acc
    return total


def _lower_series(x: float, df: int) -> float:
    """P(df/2, x/2), the chi^2 lower tail, as the series of positive terms (used where it is
    below 0.5, i.e. x/2 below about df/2 + 1, where the series converges fast)."""
    a, y = 0.5 * df, 0.5 * x
    if y == 0.0:
        return 0.0
    term, total, n = 1.0, 1.0, 0
    while term > _EPS * total:
        n += 1
        term *= y / (a + n)
        total += term
        if n > 10_000:  # not reached for y < a + 1 + 10 sqrt(a + 1); a guard
            return math.nan
    return math.pow(y, a) / _gamma_half(df) * math.exp(-y) * total


def _tails(x: float, df: int) -> tuple[float, float] | None:
    """(lower, upper) tails of chi^2(df) at x, each computed directly where it is the smaller
    one, or None outside the exact range."""
    if x != x or x < 0.0:
        return None
    if x == math.inf:
        return 1.0, 0.0
    if 0.5 * x > MAX_HALF_X:
        return None
    upper = _upper(x, df)
    if upper < 0.5:
        return 1.0 - upper, upper
    lower = _lower_series(x, df)
    if lower != lower:
        return None
    return lower, 1.0 - lower


def chi2_sf(x: float, df: float) -> float | None:
    d = _int_df(df)
    t = _tails(x, d) if d is not None else None
    return None if t is None else t[1]


def chi2_cdf(x: float, df: float) -> float | None:
    d = _int_df(df)
    t = _tails(x, d) if d is not None else None
    return None if t is None else t[0]


def _pdf(x: float, df: int) -> float:
    """chi^2 density: (x/2)^(a-1) e^(-x/2) / (2 Gamma(a)), a = df/2 (x > 0)."""
    a, y = 0.5 * df, 0.5 * x
    return math.pow(y, a - 1.0) * math.exp(-y) * a / (2.0 * _gamma_half(df))


def _quantile(p: float, df: float, upper: bool) -> float | None:
    """x with (upper ? sf : cdf)(x) = p, or None outside the exact range."""
    d = _int_df(df)
    if d is None or p != p or not 0.0 <= p <= 1.0:
        return None
    if p == 0.0:
        return math.inf if upper else 0.0
    if p == 1.0:
        return 0.0 if upper else math.inf
    if p < 1e-250 or p > 0.5:
        # p > 0.5: the quantile of a probability near 1 is ill-conditioned (1 - p carries the
        # rounding of p) and a fit never asks for it; p < 1e-250: the root may leave the
        # range of the closed forms. Both go to scipy.special.
        return None
    z = ndtri(p)
    if upper:
        z = -z
    # Wilson-Hilferty start, then Newton steps kept inside a bracket [lo, hi]
    h = 2.0 / (9.0 * d)
    x = d * max(1.0 - h + z * math.sqrt(h), 0.05) ** 3
    sign = -1.0 if upper else 1.0     # g(x) = sign * (tail(x) - p) is increasing in x
    lo, hi = 0.0, math.inf
    for _ in range(200):
        t = _tails(x, d)
        if t is None:
            return None
        g = sign * ((t[1] if upper else t[0]) - p)
        if g == 0.0:
            return x
        if g < 0.0:
            lo = x
        else:
            hi = x
        dens = _pdf(x, d)
        step = g / dens if dens > 0.0 else math.inf
        new = x - step
        if not (lo < new < hi):
            new = 0.5 * (lo + hi) if hi < math.inf else 2.0 * x + 1.0
        if abs(new - x) <= 2.0 * _EPS * x or (hi < math.inf and hi - lo <= 2.0 * _EPS * hi):
            return new
        x = new
    return None


def chi2_ppf(p: float, df: float) -> float | None:
    return _quantile(p, df, upper=False)


def chi2_isf(q: float, df: float) -> float | None:
    return _quantile(q, df, upper=True)
