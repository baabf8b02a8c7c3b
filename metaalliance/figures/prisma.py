"""PRISMA 2020 flow diagram of the curated dataset (records identified, read, excluded, awaiting
extraction, included), drawn with the journal style of the forest plot (``plots.journal_rc``:
one sans-serif font at 7 pt, thin lines, TrueType fonts embedded).

The layout follows the PRISMA 2020 template for new reviews (Page et al. 2021; the PRISMA2020 R
package draws the same boxes): a coloured header over the main column, the phases
Identification / Screening / Included as rounded vertical labels on the left, the main boxes
in one column joined by downward arrows, and each exclusion box to the right of the box it
leaves, joined by a rightward arrow. Every number comes from ``dataset.flow.counts`` (counted
from the files); none is typed here.

Boxes carry gids (``prisma-identified``, ``prisma-removed``, ``prisma-screened``,
``prisma-excluded-screening``, ``prisma-sought``, ``prisma-awaiting``, ``prisma-assessed``,
``prisma-excluded-reports``, ``prisma-included``), so tests can read their text.
"""

from __future__ import annotations

from metaalliance.figures import plots

#: labels of the exclusion categories and awaiting reasons as the diagram prints them
CATEGORY_LABELS = {
    "duplicate": "same sample as an included study",
    "not_alliance_outcome": "no alliance-outcome association",
    "not_convertible": "statistic not convertible to r",
    "sample_pairing": "rs not paired with their samples",
    "no_df": "t or F without the patients' df",
    "no_n": "n behind the statistic not shown",
    "no_statistic": "no statistic in the text read",
}
MISSING_LABELS = {"full text": "full text not reached", "n": "n not shown",
                  "df": "df not shown", "sample pairing": "samples not paired"}
KIND_LABELS = {"study": "the studies' own texts (abstracts, full texts, table pages)",
               "review": "tables of published reviews",
               "reference_list": "reference lists of reviews"}

_HEADER = "#f6e7a8"   # PRISMA template: yellow header, light blue phase labels
_PHASE = "#c6dbef"


def _n(value: int) -> str:
    return f"(n = {plots.fmt_int(value)})"


def box_texts(flow) -> dict[str, str]:
    """The text of every box, keyed by the box's gid suffix."""
    ident = ["Records identified from:"] + [
        f"  {KIND_LABELS[k]} {_n(v)}" for k, v in flow.identified.items() if v]
    awaiting = [f"Reports awaiting extraction {_n(flow.awaiting_total)}:"] + [
        f"  {MISSING_LABELS[k]} {_n(v)}" for k, v in
        sorted(flow.awaiting.items(), key=lambda kv: (-kv[1], kv[0]))]
    reports = [f"Reports excluded {_n(sum(flow.excluded_reports.values()))}:"] + [
        f"  {CATEGORY_LABELS[k]} {_n(v)}" for k, v in flow.excluded_reports.items()]
    return {
        "identified": "\n".join(ident),
        "removed": "Records removed before screening:\n"
                   f"  {CATEGORY_LABELS['duplicate']} {_n(flow.duplicates)}",
        "screened": f"Records screened {_n(flow.screened)}",
        "excluded-screening": "Records excluded:\n"
                              f"  {CATEGORY_LABELS['not_alliance_outcome']} "
                              f"{_n(flow.excluded_screening)}",
        "sought": f"Reports sought for a usable statistic {_n(flow.sought)}",
        "awaiting": "\n".join(awaiting),
        "assessed": f"Reports assessed for eligibility {_n(flow.assessed)}",
        "excluded-reports": "\n".join(reports),
        "included": f"Studies included {_n(flow.studies)}\n"
                    f"Independent samples {_n(flow.samples)}\n"
                    f"Findings {_n(flow.findings)}, of which read in\n"
                    f"  review tables {_n(flow.findings_read_in_review)}",
    }


def prisma_figure(flow, *, width="double", font_size: float = plots.FONT_SIZE,
                  header: str = "Identification of studies via public texts and review tables"):
    """The PRISMA 2020 flow diagram as a matplotlib Figure (width: preset name or mm)."""
    import matplotlib
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    texts = box_texts(flow)
    width_in = plots.width_inches(width)
    pt = 1 / 72.0                                     # inches per point
    pad = 0.6 * font_size * pt                         # inner box padding
    pitch = 1.3 * font_size * pt                       # line pitch
    gap_v = 1.6 * font_size * pt                       # vertical gap between rows (arrow)
    phase_w = 2.2 * font_size * pt                     # width of the phase labels
    gap_h = 2.0 * font_size * pt                       # between phase label, main and side
    usable = width_in - phase_w - 2 * gap_h - 2 * pad

    def need(keys, size):                              # widest line of these boxes, in inches
        lines = [ln for k in keys for ln in texts[k].split("\n")]
        return max(plots._text_width_pt(ln, size, False) for ln in lines) \
            * plots.TEXT_WIDTH_SAFETY * pt * size / font_size + 2 * pad
    mains = ("identified", "screened", "sought", "assessed", "included")
    sides = ("removed", "excluded-screening", "awaiting", "excluded-reports")
    main_need, side_need = need(mains, font_size), need(sides, font_size)
    if main_need + side_need > usable:                 # too narrow: smaller text, else an error
        font_size = font_size * usable / (main_need + side_need)
        if font_size < plots.MIN_FONT_SIZE:
            from metaalliance.errors import OptionError
            raise OptionError(f"width: the PRISMA boxes do not fit in {width_in * 25.4:.0f} mm "
                              f"at {plots.MIN_FONT_SIZE:g} pt (use a wider figure)")
        return prisma_figure(flow, width=width, font_size=font_size, header=header)
    main_w = main_need + (usable - main_need - side_need) / 2
    side_w = usable - main_w
    x_phase = pad
    x_main = x_phase + phase_w + gap_h
    x_side = x_main + main_w + gap_h

    def height(key):
        return texts[key].count("\n") * pitch + font_size * pt + 2 * pad

    rows = [("identified", "removed"), ("screened", "excluded-screening"),
            ("sought", "awaiting"), ("assessed", "excluded-reports"), ("included", None)]
    row_h = [max(height(a), height(b) if b else 0) for a, b in rows]
    # a phase of one row is at least as tall as its (rotated) label
    for i, label in ((0, "Identification"), (4, "Included")):
        need = plots._text_width_pt(label, font_size, True) * plots.TEXT_WIDTH_SAFETY * pt
        row_h[i] = max(row_h[i], need + 2 * pad)
    header_h = font_size * pt + 2 * pad
    total_h = pad + header_h + gap_v + sum(row_h) + gap_v * (len(rows) - 1) + pad

    fig = plots._new_figure(width_in, total_h)
    with matplotlib.rc_context(plots.journal_rc(font_size)):
        ax = fig.add_axes([0, 0, 1, 1])
        ax.set_xlim(0, width_in)
        ax.set_ylim(total_h, 0)                        # y grows downwards, in inches
        ax.set_axis_off()

        def box(x, y, w, h, key, face="white", text=None, rotate=False, gid=None):
            gid = gid or f"prisma-{key}"
            ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.03"
                                        if rotate else "square,pad=0", linewidth=0.6,
                                        edgecolor="black", facecolor=face,
                                        gid=f"{gid}-box"))
            if rotate:
                ax.text(x + w / 2, y + h / 2, text, rotation=90, ha="center", va="center",
                        fontweight="bold", gid=gid)
            else:
                ax.text(x + pad, y + h / 2, texts[key] if text is None else text, ha="left",
                        va="center", linespacing=1.3, gid=gid)

        def arrow(x0, y0, x1, y1):
            ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>",
                                         mutation_scale=6, linewidth=0.6, color="black",
                                         shrinkA=0, shrinkB=0))

        y = pad
        box(x_main, y, main_w + gap_h + side_w, header_h, None, face=_HEADER, text=header,
            gid="prisma-header")
        y += header_h + gap_v
        tops = []
        for (main, side), h in zip(rows, row_h):
            tops.append(y)
            box(x_main, y, main_w, h, main)
            if side:
                box(x_side, y, side_w, h, side)
                arrow(x_main + main_w, y + h / 2, x_side, y + h / 2)
            y += h + gap_v
        for i in range(len(rows) - 1):
            arrow(x_main + main_w / 2, tops[i] + row_h[i], x_main + main_w / 2, tops[i + 1])
        phases = [("Identification", 0, 0), ("Screening", 1, 3), ("Included", 4, 4)]
        for label, first, last in phases:
            top, bottom = tops[first], tops[last] + row_h[last]
            box(x_phase, top, phase_w, bottom - top, None, face=_PHASE, text=label,
                rotate=True, gid=f"prisma-phase-{label.lower()}")
    return fig


__all__ = ["box_texts", "prisma_figure", "CATEGORY_LABELS", "MISSING_LABELS", "KIND_LABELS"]
