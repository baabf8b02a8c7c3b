"""Double extraction: how well two reviewers' extractions of the same studies agree.

``compare(a, b)`` takes two lists of flat finding records (sheet rows or a findings folder, see
``dataset.intake.records_of``), matches them on (citekey, id), and gives per field:

- vocabulary fields (and the statistic type, the sign flag): percent agreement and Cohen's kappa
  (unweighted, from statsmodels' ``cohens_kappa`` on the two reviewers' contingency table);
- numbers (n, the statistic's value, df, n1, n2, session, and r, the sign-aligned correlation each
  row converts to): agreement within a tolerance and the largest absolute difference;
- ICC(2,1) of the converted r (two-way random effects, absolute agreement, single rater;
  Shrout & Fleiss 1979), and the list of discrepancies to reconcile.

Free-text fields (locator, note, outcome measure ...) are not compared: two careful reviewers
word them differently. Computation only; no I/O.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from metaalliance.dataset.history import plain

#: default tolerances: r to the second decimal a paper prints; counts exactly
TOL_R = 0.005
TOL_NUMBER = 0.0


class ICC(NamedTuple):
    """Shrout & Fleiss (1979) intraclass correlations from the two-way ANOVA of a targets x
    judges table, with the mean squares they are built from."""
    icc1_1: float
    icc2_1: float
    icc3_1: float
    icc1_k: float
    icc2_k: float
    icc3_k: float
    bms: float   # between targets
    wms: float   # within targets
    jms: float   # between judges
    ems: float   # residual
    n: int
    k: int


def icc(table) -> ICC:
    """Intraclass correlations of an n targets x k judges table (no missing cells).

    Shrout, P. E., & Fleiss, J. L. (1979). Intraclass correlations: uses in assessing rater
    reliability. Psychological Bulletin, 86(2), 420-428, Table 1 formulas:
    ICC(2,1) = (BMS - EMS) / (BMS + (k - 1) EMS + k (JMS - EMS) / n).
    """
    import numpy as np

    x = np.asarray(table, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError("icc needs at least 2 targets and 2 judges")
    n, k = x.shape
    grand = x.mean()
    ss_total = ((x - grand) ** 2).sum()
    ss_targets = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_judges = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_within = ss_total - ss_targets
    ss_error = ss_total - ss_targets - ss_judges
    bms = ss_targets / (n - 1)
    wms = ss_within / (n * (k - 1))
    jms = ss_judges / (k - 1)
    ems = ss_error / ((n - 1) * (k - 1))

    def ratio(num, den):
        return float(num / den) if den != 0 else float("nan")

    return ICC(
        icc1_1=ratio(bms - wms, bms + (k - 1) * wms),
        icc2_1=ratio(bms - ems, bms + (k - 1) * ems + k * (jms - ems) / n),
        icc3_1=ratio(bms - ems, bms + (k - 1) * ems),
        icc1_k=ratio(bms - wms, bms),
        icc2_k=ratio(bms - ems, bms + (jms - ems) / n),
        icc3_k=ratio(bms - ems, bms),
        bms=float(bms), wms=float(wms), jms=float(jms), ems=float(ems), n=n, k=k)


def kappa(a: list, b: list) -> float | None:
    """Cohen's (unweighted) kappa of two raters' codes, by statsmodels' ``cohens_kappa``.

    None when it is undefined: both raters used one and the same code throughout (expected
    agreement 1), so there is no variation to agree on.
    """
    import numpy as np
    from statsmodels.stats.inter_rater import cohens_kappa

    cats = sorted({str(v) for v in a} | {str(v) for v in b})
    index = {c: i for i, c in enumerate(cats)}
    table = np.zeros((len(cats), len(cats)))
    for x, y in zip(a, b):
        table[index[str(x)], index[str(y)]] += 1
    if len(cats) < 2:
        return None
    import warnings
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # statsmodels also forms z = kappa / se0, which divides by 0 on a perfect table
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(cohens_kappa(table, return_results=True).kappa)
    return value if math.isfinite(value) else None


def _r_of(rec: dict) -> float | None:
    """The sign-aligned r a flat record converts to, or None when it cannot be converted."""
    from metaalliance.dataset import effectsize

    try:
        raw = effectsize.convert(rec["stat_type"], float(rec["value"]), n=rec.get("n"),
                                 df=rec.get("df"), n1=rec.get("n1"), n2=rec.get("n2"),
                                 sign=rec.get("sign"))
    except Exception:  # a record the validator would refuse: no r to compare
        return None
    if raw is None or not math.isfinite(raw):
        return None
    pib = rec.get("positive_is_better")
    if not isinstance(pib, bool):
        return None
    return float(raw if pib else -raw)


def _difference(x, y) -> float:
    """|x - y| of two numbers; inf when one is missing or not a finite number (a disagreement
    unless both are the same text)."""
    try:
        d = abs(float(x) - float(y))
    except (TypeError, ValueError):
        return 0.0 if x == y else math.inf
    return d if math.isfinite(d) else (0.0 if x == y else math.inf)


def field_kinds() -> dict[str, str]:
    """The compared fields: {column: "categorical" | "number"} (from the sheet's columns)."""
    from metaalliance.dataset.intake import columns

    out = {}
    for c in columns():
        if c.name in ("citekey", "id"):
            continue
        if c.kind in ("level", "bool"):
            out[c.name] = "categorical"
        elif c.kind in ("int", "number"):
            out[c.name] = "number"
    out["r"] = "number"
    return out


def compare(a: list[dict], b: list[dict], *, tol_r: float = TOL_R,
            tol_number: float = TOL_NUMBER) -> dict:
    """Agreement of two extractions of the same studies (see the module docstring).

    A value missing on one side counts as a disagreement ("" vs the value); a field missing on
    both sides is not counted.
    """
    import numpy as np

    def keyed(records):
        return {(str(r.get("citekey")), str(r.get("id"))): r for r in records}

    ka, kb = keyed(a), keyed(b)
    matched = sorted(set(ka) & set(kb))
    kinds = field_kinds()
    fields = {}
    discrepancies = []
    for field, kind in kinds.items():
        pairs = []
        for key in matched:
            va = _r_of(ka[key]) if field == "r" else ka[key].get(field)
            vb = _r_of(kb[key]) if field == "r" else kb[key].get(field)
            if va is None and vb is None:
                continue
            pairs.append((key, va, vb))
        if not pairs:
            continue
        if kind == "categorical":
            xa = ["" if v is None else str(v) for _, v, _ in pairs]
            xb = ["" if v is None else str(v) for _, _, v in pairs]
            same = [x == y for x, y in zip(xa, xb)]
            entry = {"kind": kind, "n": len(pairs), "agreement": float(np.mean(same)),
                     "kappa": kappa(xa, xb)}
        else:
            tol = tol_r if field == "r" else tol_number
            diffs = [_difference(x, y) for _, x, y in pairs]
            same = [d <= tol + 1e-12 for d in diffs]
            finite = [d for d in diffs if math.isfinite(d)]
            entry = {"kind": kind, "n": len(pairs), "agreement": float(np.mean(same)),
                     "tolerance": tol, "max_difference": max(finite) if finite else None}
        fields[field] = entry
        for (key, va, vb), ok in zip(pairs, same):
            if not ok:
                discrepancies.append({"citekey": key[0], "id": key[1], "field": field,
                                      "a": plain(va), "b": plain(vb)})
    r_pairs = [(_r_of(ka[k]), _r_of(kb[k])) for k in matched]
    r_pairs = [p for p in r_pairs if p[0] is not None and p[1] is not None]
    icc_r = None
    if len(r_pairs) >= 2:
        value = icc(r_pairs).icc2_1
        icc_r = value if math.isfinite(value) else None
    order = {f: i for i, f in enumerate(kinds)}
    discrepancies.sort(key=lambda d: (d["citekey"], d["id"], order[d["field"]]))
    return {"matched": len(matched),
            "only_in_a": [{"citekey": c, "id": i} for c, i in sorted(set(ka) - set(kb))],
            "only_in_b": [{"citekey": c, "id": i} for c, i in sorted(set(kb) - set(ka))],
            "fields": fields, "icc_r": icc_r, "icc_r_n": len(r_pairs),
            "discrepancies": discrepancies}
