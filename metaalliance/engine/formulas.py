"""Design matrices from moderator formulas, through formulaic, with R's (metafor's) coding.

``design_matrix(data, "~ a * b + factor(year) + I(x**2) + center(x)")`` returns the matrix R's
``model.matrix`` builds for ``rma(mods = ~ ...)``:

* text, boolean and pandas-categorical columns, ``factor(col)`` and ``C(col)`` are categorical
  with treatment contrasts, the first level (sorted; a pandas Categorical keeps its category
  order) the reference; columns are named as R names them (``instrumentWAI-S``,
  ``factor(year)2001``, ``flagTRUE``, interactions ``instrumentWAI-S:year``);
* numeric columns enter as they are; ``I(expr)`` is arithmetic on columns (``**`` or ``^`` for
  powers), ``center(x)`` centres a column at its mean, ``scale(x)`` standardises it,
  ``log/exp/sqrt/abs(x)`` transform it;
* ``a*b`` is ``a + b + a:b``; ``- 1`` (or ``0 +``) drops the intercept, and then the first
  factor is coded with all its levels, as in R; the intercept ``intrcpt`` comes first.

formulaic (Wilkinson formulas, kept by its authors) parses and expands the formula. What a user
types is never run as Python: before formulaic sees it, the formula is checked token by token
(column names, numbers, the operators ``+ - * / : ^ **``, parentheses and the functions
above; nothing else, no attribute access, no dunder names).

Rows with a missing value in a used column are left out of the fit (``keep``), as R's
``na.omit``; their rows of X are 0.
"""

from __future__ import annotations

import re
import warnings

import numpy as np

from metaalliance.errors import DataError, MetaAllianceWarning, ModelError, OptionError
from metaalliance.options import YI_MAX

__all__ = ["design_matrix", "formula_columns", "FUNCTIONS"]

INTERCEPT = "intrcpt"
#: functions a formula may call (everything else is refused before formulaic sees it)
FUNCTIONS = ("factor", "C", "I", "center", "scale", "log", "exp", "sqrt", "abs")
_CATEGORICAL_FUNS = ("factor", "C")
_TOKEN = re.compile(r"\s*(?:(`[^`]+`)|([A-Za-z_][A-Za-z0-9_]*)|(\d+\.?\d*(?:[eE][-+]?\d+)?|"
                    r"\.\d+)|(\*\*|[-+*/:^()~,]))")


def _pos(idx, n=5):
    shown = ", ".join(str(int(i) + 1) for i in idx[:n])
    return shown + (" ..." if len(idx) > n else "")


def _tokens(formula: str):
    out, i = [], 0
    s = formula.rstrip()
    while i < len(s):
        m = _TOKEN.match(s, i)
        if not m or m.end() == i:
            bad = s[i:].strip()[:20]
            raise OptionError(f"formula: cannot read {bad!r} in {formula!r}; use column names, "
                              "numbers, + - * / : ^ ** ( ) and the functions "
                              f"{', '.join(FUNCTIONS)}")
        out.append(m.group(1) or m.group(2) or m.group(3) or m.group(4))
        i = m.end()
    return out


def _check(formula):
    """Token-level whitelist; returns (rhs text, columns used, categorical-call columns)."""
    if not isinstance(formula, str) or not formula.strip().startswith("~"):
        raise OptionError(f"formula: {formula!r} must look like '~ a + b'")
    toks = _tokens(formula.strip()[1:])
    if "~" in toks:
        raise OptionError(f"formula: {formula!r} must have one '~' (no left-hand side)")
    names, cats = [], []
    for j, t in enumerate(toks):
        nxt = toks[j + 1] if j + 1 < len(toks) else None
        if t.startswith("`"):
            names.append(t[1:-1])
        elif re.match(r"[A-Za-z_]", t):
            if "__" in t:
                raise OptionError(f"formula: name {t!r} is not allowed")
            if nxt == "(":
                if t not in FUNCTIONS:
                    raise OptionError(f"formula: function {t!r} is not supported (use "
                                      f"{', '.join(FUNCTIONS)})")
                if t in _CATEGORICAL_FUNS:
                    inner = toks[j + 2] if j + 2 < len(toks) else None
                    close = toks[j + 3] if j + 3 < len(toks) else None
                    if inner is None or close != ")" or not re.match(r"[A-Za-z_`]", inner):
                        raise OptionError(f"formula: {t}() takes one column name")
                    cats.append((t, inner.strip("`")))
            else:
                names.append(t)
    rhs = formula.strip()[1:]
    if not [n for n in names] and not cats:
        raise OptionError(f"formula: {formula!r} names no moderator")
    return rhs, list(dict.fromkeys(names + [c for _, c in cats])), cats


def formula_columns(formula: str) -> list:
    """The data columns a formula uses (for the CLI's missing-value handling)."""
    return _check(formula)[1]


def _label(lv) -> str:
    if lv is True or (isinstance(lv, np.bool_) and lv):
        return "TRUE"
    if lv is False or isinstance(lv, np.bool_):
        return "FALSE"
    if isinstance(lv, (float, np.floating)):
        return f"{lv:g}"
    return str(lv)


def _is_numeric(series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _categorical(s, term):
    """A pandas Categorical with R-labelled levels in R's order (levels present only)."""
    import pandas as pd

    if isinstance(s.dtype, pd.CategoricalDtype):
        levels = [c for c in s.cat.categories if (s == c).any()]
    elif pd.api.types.is_bool_dtype(s) or (s.dtype == object and all(
            isinstance(x, (bool, np.bool_)) for x in s)):
        levels = [v for v in (False, True) if (s == v).any()]
    elif pd.api.types.is_numeric_dtype(s):
        levels = sorted(pd.unique(s))
    else:
        s = s.astype(str)
        levels = sorted(pd.unique(s))
    if len(levels) < 2:
        # R's model.matrix stops here ("contrasts can be applied only to factors with 2
        # or more levels"); dropping the term silently would fit another model
        found = f"one level, {_label(levels[0])!r}," if levels else "no values"
        raise ModelError(f"formula: {term} has {found} in the {len(s)} row(s) used; "
                         "a categorical moderator needs at least 2 levels")
    single = [_label(lv) for lv in levels if int((s == lv).sum()) == 1]
    if single:
        what = (f"level {single[0]!r} occurs" if len(single) == 1 else
                f"levels {', '.join(map(repr, single))} each occur")
        warnings.warn(f"formula: {term}: {what} in one row only; what the model says about "
                      f"{'it' if len(single) == 1 else 'them'} rests on that one study",
                      MetaAllianceWarning, stacklevel=4)
    labels = [_label(lv) for lv in levels]
    mapping = dict(zip(levels, labels))
    values = [mapping[x] for x in s]
    return pd.Categorical(values, categories=labels)


def design_matrix(data, formula: str):
    """Design matrix of ``formula`` over ``data`` as R's ``model.matrix`` (see module doc).

    Returns (X (k, p) float array, names list, keep (k,) bool: rows without missing values).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"g": ["b", "a", "b", "a"], "x": [1.0, 2.0, 3.0, 5.0]})
    >>> X, names, keep = design_matrix(df, "~ g * x")
    >>> names
    ['intrcpt', 'gb', 'x', 'gb:x']
    >>> X[:, 3].tolist()
    [1.0, 0.0, 3.0, 0.0]
    """
    import pandas as pd
    from formulaic import model_matrix

    rhs, columns, cats = _check(formula)
    missing_cols = [c for c in columns if c not in data.columns]
    if missing_cols:
        raise DataError(f"formula: no column {missing_cols[0]!r} in the data (columns: "
                        f"{', '.join(map(str, data.columns))})")
    k = len(data)
    keep = np.ones(k, dtype=bool)
    for c in columns:
        col = data[c]
        miss = col.isna().to_numpy()
        if col.dtype == object:
            miss = miss | (col.astype(str).str.strip() == "").to_numpy()
        keep &= ~miss
    kept = data.loc[keep, columns].reset_index(drop=True)
    frame = {}
    for c in columns:
        s = kept[c]
        if _is_numeric(s):
            x = s.to_numpy(dtype=float)
            bad = np.flatnonzero(np.isinf(x) | (np.abs(np.nan_to_num(x)) > YI_MAX))
            if bad.size:
                rows = np.flatnonzero(keep)[bad]
                raise DataError(f"formula: {c} has a value beyond +-{YI_MAX:g} at position(s) "
                                f"{_pos(rows)}; rescale it (e.g. thousands instead of units)")
            frame[c] = x
        else:
            frame[c] = _categorical(s, c)
    # factor(x) / C(x): a categorical copy under the call's own name (quoted for formulaic)
    for fun, c in cats:
        frame[f"{fun}({c})"] = _categorical(kept[c], f"{fun}({c})")
    text = rhs
    for fun, c in cats:
        text = re.sub(rf"\b{fun}\(\s*`?{re.escape(c)}`?\s*\)", f"`{fun}({c})`", text)
    # R's power inside I(): ^ -> ** (outside I() '^' is formulaic's interaction power)
    text = re.sub(r"I\(([^()]*)\)", lambda m: "I(" + m.group(1).replace("^", "**") + ")", text)
    df = pd.DataFrame(frame)
    try:
        mm = model_matrix(text, df, na_action="raise", ensure_full_rank=True)
    except (OptionError, DataError, ModelError):
        raise
    except Exception as exc:   # formulaic's own parse/eval errors: one clear line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OptionError(f"formula: {formula!r} cannot be used: {msg}") from None
    names = []
    for n in mm.columns:
        if n == "Intercept":
            names.append(INTERCEPT)
            continue
        n = re.sub(r"\[T\.(.*?)\]", r"\1", n)
        n = re.sub(r"\[(.*?)\]", r"\1", n)
        names.append(n)
    if INTERCEPT in names and names[0] != INTERCEPT:
        raise ModelError("formula: the intercept must come first")  # pragma: no cover
    Xk = np.asarray(mm, dtype=float)
    X = np.zeros((k, Xk.shape[1]))
    X[keep] = Xk
    if not np.all(np.isfinite(Xk)):
        raise DataError(f"formula: {formula!r} gives values that are not finite numbers (e.g. "
                        "log of a value <= 0)")
    return X, names, keep
