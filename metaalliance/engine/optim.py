"""Small numerical optimisation helpers shared by models fitted by maximum likelihood over a few
parameters (selection models, the CHE working model).

``maximise_box`` minimises a function of a handful of parameters under box bounds by projected
Newton steps with central-difference derivatives; ``num_grad`` / ``num_hess`` are the central
differences (the Hessian as metafor's numDeriv-based standard errors use it).
"""

from __future__ import annotations

import numpy as np

__all__ = ["num_grad", "num_hess", "hess_from_grad", "rel_steps", "maximise_box"]


def num_grad(f, x, h):
    g = np.empty_like(x)
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = h[j]
        g[j] = (f(x + e) - f(x - e)) / (2 * h[j])
    return g


def num_hess(f, x, h):
    n = x.size
    H = np.empty((n, n))
    f0 = f(x)
    for i in range(n):
        ei = np.zeros(n)
        ei[i] = h[i]
        H[i, i] = (f(x + ei) - 2 * f0 + f(x - ei)) / h[i] ** 2
        for j in range(i):
            ej = np.zeros(n)
            ej[j] = h[j]
            H[i, j] = H[j, i] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej)
                                 + f(x - ei - ej)) / (4 * h[i] * h[j])
    return H


def hess_from_grad(grad, x, h):
    """Hessian by central differences of an analytic gradient (symmetrised)."""
    n = x.size
    H = np.empty((n, n))
    for j in range(n):
        e = np.zeros(n)
        e[j] = h[j]
        H[:, j] = (grad(x + e) - grad(x - e)) / (2 * h[j])
    return 0.5 * (H + H.T)


def rel_steps(x, scale):
    return scale * np.maximum(np.abs(x), 1e-2)


def maximise_box(fun, x0, lower, upper, scale=1e-6, max_iter=100, grad=None):
    """Minimise ``fun`` under box bounds by projected Newton steps (numerical derivatives).

    Coordinates on a bound whose gradient points outwards stay there; the others take a
    Newton step (a gradient step where the Hessian is not positive definite), clipped to the
    box, halved until ``fun`` decreases. Few parameters (p + 1 + deltas), so derivatives by
    central differences are cheap.
    """
    x = np.clip(np.asarray(x0, dtype=float), lower, upper)
    fx = fun(x)
    for _ in range(max_iter):
        g = num_grad(fun, x, rel_steps(x, scale)) if grad is None else grad(x)
        at_lo = (x <= lower) & (g > 0)
        at_hi = (x >= upper) & (g < 0)
        inner = ~(at_lo | at_hi)
        if not inner.any():
            break
        gi = g[inner]
        if grad is None:
            H = num_hess(lambda z: fun(_put(x, inner, z)), x[inner], rel_steps(x[inner], 1e-4))
        else:
            H = hess_from_grad(lambda z: grad(_put(x, inner, z))[inner], x[inner],
                               rel_steps(x[inner], 1e-5))
        step = None
        if np.all(np.isfinite(H)):
            try:
                np.linalg.cholesky(H)
                step = np.linalg.solve(H, gi)
            except np.linalg.LinAlgError:
                step = None
        if step is None or not np.all(np.isfinite(step)):
            step = gi / max(np.max(np.abs(np.diag(H))) if np.all(np.isfinite(H)) else 1.0,
                            1e-8)
        t = 1.0
        improved = False
        while t > 1e-10:
            xn = np.clip(_put(x, inner, x[inner] - t * step), lower, upper)
            fn = fun(xn)
            if fn <= fx:
                improved = True
                break
            t /= 2
        if not improved:
            break
        change = np.max(np.abs(xn - x) / np.maximum(np.abs(x), 1e-2))
        x, fx = xn, fn
        if change < 1e-11:
            break
    return x, fx


def _put(x, mask, vals):
    out = x.copy()
    out[mask] = vals
    return out
