"""How far the dataset reaches and how its findings were read: the numbers the report's
"Data analysed" section shows beside the PRISMA flow diagram.

- ``how_read_rows``: findings by how they were read (the study's own text or a review's table;
  exact or approximate conversion; zero-order, partial or adjusted effect);
- ``strict_subset``: the findings read in the studies' own texts, converted exactly and
  zero-order (the main model restricted to them is a sensitivity row of the report);
- ``coverage_sentence`` (from ``dataset.flow``): "k studies included, m awaiting extraction".
"""

from __future__ import annotations

#: the name of the restricted model in the report's sensitivity table
STRICT_NAME = "three-level, zero-order exact findings from the studies' own texts"

READ_LABELS = {False: "study's own text", True: "review table"}
EFFECT_ORDER = ("zero_order", "partial", "adjusted")
CONVERSION_ORDER = ("exact", "approximate")


def strict_subset(df):
    """Findings read in the studies' own texts, converted exactly, zero-order."""
    keep = (~df["read_in_review"].astype(bool)) & (df["conversion"] == "exact") \
        & (df["effect_type"] == "zero_order")
    return df[keep].reset_index(drop=True)


def how_read_rows(df, cluster: str = "sample") -> list[dict]:
    """One row per (how read, conversion, effect type) present, with findings, studies and
    samples; a last row holds the totals. Rows in a fixed order (own text first)."""
    rows = []
    for via in (False, True):
        for conv in CONVERSION_ORDER:
            for eff in EFFECT_ORDER:
                part = df[(df["read_in_review"].astype(bool) == via)
                          & (df["conversion"] == conv) & (df["effect_type"] == eff)]
                if len(part):
                    rows.append({"read": READ_LABELS[via], "conversion": conv,
                                 "effect_type": eff.replace("_", "-"), "k": int(len(part)),
                                 "studies": int(part["citekey"].nunique()),
                                 "samples": int(part[cluster].nunique())})
    rows.append({"read": "all findings", "conversion": "", "effect_type": "",
                 "k": int(len(df)), "studies": int(df["citekey"].nunique()),
                 "samples": int(df[cluster].nunique())})
    return rows


def strict_fit(df_main, fit):
    """``fit(subset)`` on the strict subset of the main findings; (subset, result or None,
    why not). ``fit`` is the report's three-level model function."""
    sub = strict_subset(df_main)
    if len(sub) < 2:
        return sub, None, f"k = {len(sub)} zero-order exact findings from the studies' own texts"
    return sub, fit(sub), ""


def coverage(findings_dir=None, bib=None):
    """The PRISMA counts of the dataset (``dataset.flow.Flow``)."""
    from metaalliance.dataset import flow
    return flow.counts(findings_dir, bib)


def coverage_sentence(counts) -> str:
    from metaalliance.dataset import flow
    return flow.coverage_sentence(counts)


__all__ = ["STRICT_NAME", "strict_subset", "how_read_rows", "strict_fit", "coverage",
           "coverage_sentence"]
