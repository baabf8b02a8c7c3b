"""Numbers as text, APA style: the one place where numbers are rounded for display.

Shared by the figures and the report (results keep full precision; the formatters below turn
them into text for tables, figures and the HTML report). Imports nothing heavy.
"""

from __future__ import annotations

import math

MINUS = "\u2212"  # a typographic minus sign, as journals set it


# --- number formatting (APA 7th edition) ------------------------------------------------------

def _sign(text: str) -> str:
    return text.replace("-", MINUS)


def fmt_num(x, digits: int = 2) -> str:
    """A number with ``digits`` decimals and a typographic minus; '' for None/NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    text = f"{float(x):.{digits}f}"
    if float(text) == 0:  # no "-0.00"
        text = text.lstrip("-")
    return _sign(text)


def fmt_r(x, digits: int = 2) -> str:
    """A correlation (or any value bounded by 1) APA-style: no leading zero, '.28', '\u2212.05'."""
    text = fmt_num(x, digits)
    if text.startswith("0."):
        return text[1:]
    if text.startswith(MINUS + "0."):
        return MINUS + text[2:]
    return text


def fmt_ci(lo, hi, digits: int = 2, r: bool = True) -> str:
    """``[lo, hi]`` with the same formatting as the estimate."""
    f = fmt_r if r else fmt_num
    return f"[{f(lo, digits)}, {f(hi, digits)}]"


def fmt_est_ci(est, lo, hi, digits: int = 2, r: bool = True) -> str:
    """``.28 [.21, .35]``."""
    f = fmt_r if r else fmt_num
    return f"{f(est, digits)} {fmt_ci(lo, hi, digits, r)}"


def fmt_p(p, with_symbol: bool = True) -> str:
    """APA p value: 'p = .023', 'p < .001' (three decimals, no leading zero)."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    p = float(p)
    if p < 0.001:
        return "p < .001" if with_symbol else "< .001"
    text = fmt_r(p, 3)
    return f"p = {text}" if with_symbol else text


def fmt_pct(x, digits: int = 1) -> str:
    """A percentage: '64.2%'."""
    text = fmt_num(x, digits)
    return f"{text}%" if text else ""


def fmt_int(x) -> str:
    """An integer with thousands separators (APA): '1,177'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{int(round(float(x))):,}"


def fmt_r_p(p) -> str:
    """A p value without the 'p' for table cells: '.023', '< .001'."""
    return fmt_p(p, with_symbol=False)


def distinct_labels(labels: list, samples: list) -> list:
    """The study label per sample; samples of one study get what tells their ids apart
    ('Jasper et al. (2014) icbt' for samples jasper2014working-icbt and -gcbt)."""
    import os

    out = list(labels)
    for lab in {x for x in labels if labels.count(x) > 1}:
        idx = [i for i, x in enumerate(labels) if x == lab]
        ids = [samples[i] for i in idx]
        prefix = os.path.commonprefix(ids)
        for i, sample_id in zip(idx, ids):
            tail = sample_id[len(prefix):].lstrip("-_.") or sample_id
            out[i] = f"{lab} {tail}"
    return out
