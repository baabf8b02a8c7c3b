"""The row model shared by every forest-like plot: rows and columns, their layout in the
figure width, the effect axis (r ticks on the z scale), drawing and pages.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

from metaalliance.errors import MetaAllianceWarning, OptionError
from metaalliance.formatting import fmt_num, fmt_r
from metaalliance.figures.style import (COLUMN_TITLES, MIN_FONT_SIZE, MIN_PANEL_SHARE, MM_PER_INCH,
                                        NUMERIC_COLUMNS, PT_PER_INCH, R_AXIS_LIMIT, RIGHT_COLUMNS,
                                        ROW_PITCH_EM, _BAND, _GREY, _new_figure, _text_width_pt,
                                        _truncate, journal_rc, width_inches)


# --- the row model shared by every forest-like plot ---------------------------------------------

@dataclass
class _Row:
    kind: str                      # study | summary | pi | group | note | blank
    cells: dict = field(default_factory=dict)
    est: float = math.nan          # positions on the model scale (z for ZCOR)
    lo: float = math.nan
    hi: float = math.nan
    weight: float = math.nan       # percent, for the square's size
    indent: int = 0                # label indent in em
    bold: bool = False
    band: int = -1                 # study index for shading (-1: none)
    block: int = -1                # subgroup block (-1: none); its head row is repeated on a
                                   # page that starts inside the block
    keep: int = 0                  # rows with one keep id stay on one page
    marker: str = "square"         # square | point | diamond


@dataclass
class _Column:
    key: str
    title: str
    side: str
    align: str
    width: float = 0.0             # pt
    offset: float = 0.0            # pt from the panel's left edge (left side) or right edge


@dataclass
class _Geometry:
    font_size: float
    row_pt: float
    left: float                     # pt occupied by the left text block (incl. gap)
    right: float                    # pt occupied by the right text block (incl. gap)
    panel: float                    # pt width of the plot panel
    margin: float


def _ci_title(r_scale: bool, level: float) -> str:
    return f"{'r' if r_scale else 'Estimate'} [{level:g}% CI]"


def _make_columns(keys, r_scale: bool, level: float, titles=None) -> list[_Column]:
    titles = dict(titles or {})
    cols = [_Column("label", titles.get("label", "Study"), "left", "left")]
    for key in keys:
        if key == "label":
            continue
        if key == "ci":
            title = titles.get("ci", _ci_title(r_scale, level))
        else:
            title = titles.get(key, COLUMN_TITLES.get(key, key.replace("_", " ").capitalize()))
        side = "right" if key in RIGHT_COLUMNS else "left"
        align = "right" if key in NUMERIC_COLUMNS else "left"
        cols.append(_Column(key, title, side, align))
    # the right block keeps its own order; left columns keep the user's order after the label
    return [c for c in cols if c.side == "left"] + [c for c in cols if c.side == "right"]


def _place_columns(rows, columns, size: float, gap: float) -> tuple[float, float]:
    """Measure every column at ``size`` and place it; returns the left and right block widths."""
    left_cols = [c for c in columns if c.side == "left"]
    right_cols = [c for c in columns if c.side == "right"]
    spanning = _spanning(rows, left_cols)
    for col in columns:
        widths = [_text_width_pt(col.title, size, True)]
        for r in rows:
            if r.kind == "note" or (col.key == "label" and id(r) in spanning):
                continue
            extra = r.indent * size if col.key == "label" else 0.0
            widths.append(_text_width_pt(r.cells.get(col.key, ""), size, r.bold) + extra)
        col.width = max(widths)
    block = sum(c.width for c in left_cols) + gap * (len(left_cols) - 1)
    need = max([_text_width_pt(r.cells.get("label", ""), size, r.bold) + r.indent * size
                for r in rows if id(r) in spanning] + [0.0])
    if need > block:
        left_cols[0].width += need - block
    left = sum(c.width for c in left_cols) + gap * len(left_cols)
    right = sum(c.width for c in right_cols) + gap * len(right_cols)
    x = -left
    for col in left_cols:
        col.offset = x
        x += col.width + gap
    x = gap
    for col in right_cols:
        col.offset = x
        x += col.width + gap
    return left, right


def _spanning(rows, left_cols) -> set:
    """Rows with no other left cell (group heads, summaries) may span the whole left block."""
    return {id(r) for r in rows if r.kind != "note"
            and not any(r.cells.get(c.key) for c in left_cols[1:])}


#: a short tail in parentheses that tells rows apart: a year '(2013)', a finding '(f4)'
_KEEP_TAIL = re.compile(r"^(.*\S)\s+(\([^()]{1,12}\))$")


def _shorten(text: str, budget: float, size: float, bold: bool) -> str:
    """``text`` cut with an ellipsis to fit ``budget`` pt; a study label keeps its year:
    'Bergman Nordgren et al. (2013)' -> 'Bergman Nord\u2026 (2013)'."""
    if _text_width_pt(text, size, bold) <= budget:
        return text
    match = _KEEP_TAIL.match(text)
    head, tail = (match.group(1), " " + match.group(2)) if match else (text, "")
    while head and _text_width_pt(head + "\u2026" + tail, size, bold) > budget:
        head = head[:-1].rstrip()
    return head + "\u2026" + tail if head else _truncate(text, 4)


def _layout(rows, columns, width_pt: float | None, font_size: float, gap_em: float = 1.2,
            fixed_panel: float | None = None) -> _Geometry:
    """Column widths from the measured text. When the panel would get less than its share of
    the width, the font shrinks to 6 pt, then long labels are shortened (keeping the year), then
    the font shrinks to MIN_FONT_SIZE; only then is it an error. Shortened labels are changed
    in ``rows``."""
    size = font_size
    left_cols = [c for c in columns if c.side == "left"]
    while True:
        gap = gap_em * size
        margin = 0.5 * size
        left, right = _place_columns(rows, columns, size, gap)
        if fixed_panel is not None:
            panel = fixed_panel
            break
        target = MIN_PANEL_SHARE * width_pt
        panel = width_pt - left - right - 2 * margin
        if panel >= target:
            break
        if size <= 6.0:
            # what the label column may take: the rest of the width after the other columns
            others = sum(c.width for c in left_cols[1:]) + gap * len(left_cols)
            budget = width_pt - right - 2 * margin - target - others
            if budget >= 8 * size:
                spanning = _spanning(rows, left_cols)
                for r in rows:
                    text = r.cells.get("label", "")
                    if r.kind == "note" or not text:
                        continue
                    room = budget - r.indent * size + (others - gap if id(r) in spanning else 0)
                    r.cells["label"] = _shorten(text, room, size, r.bold)
                left, right = _place_columns(rows, columns, size, gap)
                panel = width_pt - left - right - 2 * margin
                if panel >= target - 1e-9:
                    break
        if size <= MIN_FONT_SIZE:
            break
        size = max(MIN_FONT_SIZE, size - 0.5)
    if fixed_panel is None and panel < MIN_PANEL_SHARE * width_pt - 1e-9:
        names = ", ".join(c.key for c in columns if c.key != "label")
        raise OptionError(
            f"the columns ({names}) do not fit in {width_pt / PT_PER_INCH * MM_PER_INCH:.0f} mm even at "
            f"{MIN_FONT_SIZE:g} pt: choose fewer columns or a wider figure (--width-mm 174)"
        )
    return _Geometry(size, ROW_PITCH_EM * size, left, right, panel, margin)


def _wrap_notes(rows, max_width: float, size: float) -> list[_Row]:
    """Split note rows at '; ' so that each line fits ``max_width`` points."""
    out = []
    for row in rows:
        if row.kind != "note":
            out.append(row)
            continue
        text = row.cells.get("label", "")
        indent = row.indent * size
        if _text_width_pt(text, size, False) + indent <= max_width:
            out.append(row)
            continue
        parts = text.split("; ")
        line = parts[0]
        for part in parts[1:]:
            trial = f"{line}; {part}"
            if _text_width_pt(trial, size, False) + indent <= max_width:
                line = trial
            else:
                out.append(_Row("note", {"label": line + ";"}, indent=row.indent, keep=row.keep))
                line = part
        out.append(_Row("note", {"label": line}, indent=row.indent, keep=row.keep))
    return out


# --- axis scale ----------------------------------------------------------------------------------

def _nice_r_ticks(rlo: float, rhi: float, panel_pt: float, size: float, must=None):
    """Limits and ticks on the r scale: the finest step whose labels, at their atanh positions,
    do not crowd; the limits are ticks (inside +-R_AXIS_LIMIT) unless a point estimate or a
    summary would be cut, then the limit is R_AXIS_LIMIT itself."""
    must_lo, must_hi = must if must is not None else (rlo, rhi)
    best = None
    for step in (0.05, 0.1, 0.2, 0.25, 0.5):
        decimals = 2 if step in (0.05, 0.25) else 1
        lo = math.floor(rlo / step + 1e-9) * step
        hi = math.ceil(rhi / step - 1e-9) * step
        while hi > R_AXIS_LIMIT + 1e-12:
            hi -= step
        while lo < -R_AXIS_LIMIT - 1e-12:
            lo += step
        if hi - lo < step - 1e-12:
            continue
        ticks = np.round(np.arange(lo, hi + step / 2, step), 10)
        lim_lo = lo if lo <= must_lo + 1e-12 else -R_AXIS_LIMIT
        lim_hi = hi if hi >= must_hi - 1e-12 else R_AXIS_LIMIT
        pos = np.arctanh(ticks)
        per_z = panel_pt / (math.atanh(lim_hi) - math.atanh(lim_lo))
        widths = np.array([_text_width_pt(_fmt_tick_r(t, decimals), size, False) for t in ticks])
        best = (lim_lo, lim_hi, ticks, decimals)
        # neighbouring labels (centred on their ticks) keep at least 0.8 em between them
        need = (widths[:-1] + widths[1:]) / 2 + 0.8 * size
        if len(ticks) <= 9 and np.all(np.diff(pos) * per_z >= need):
            return best
    if best is None:  # a range narrower than every step: two ticks at the limits
        return rlo, rhi, np.round(np.array([rlo, rhi]), 2), 2
    return best


def _fmt_tick_r(value: float, decimals: int) -> str:
    if abs(value) < 1e-12:
        return "0"
    return fmt_r(value, decimals)


def _axis_range(rows, xlim, r_scale: bool):
    """Data range on the model scale, whether the user fixed it, and the range the summaries
    need (they always fit whole; wide study CIs may be clipped and get arrows)."""
    if xlim is not None:
        lo, hi = (float(v) for v in xlim)
        if not lo < hi:
            raise OptionError(f"xlim: lower limit {lo:g} must be below upper limit {hi:g}")
        if r_scale:
            if not -1 < lo < hi < 1:
                raise OptionError("xlim: on the r scale both limits must lie strictly between -1 and 1")
            lo, hi = math.atanh(lo), math.atanh(hi)
        return lo, hi, True, (lo, hi)
    core = [0.0]
    tails = []
    needed = []
    for r in rows:
        if r.kind in ("study", "point"):
            if np.isfinite(r.est):
                core.append(r.est)
                needed.append(r.est)
            tails += [v for v in (r.lo, r.hi) if np.isfinite(v)]
        elif r.kind in ("summary", "pi"):
            values = [v for v in (r.est, r.lo, r.hi) if np.isfinite(v)]
            core += values
            needed += values
    core_lo, core_hi = min(core), max(core)
    span = max(core_hi - core_lo, 0.2)
    lo = max(min(tails + [core_lo]), core_lo - 0.6 * span)
    hi = min(max(tails + [core_hi]), core_hi + 0.6 * span)
    if r_scale:
        lo = max(lo, -math.atanh(R_AXIS_LIMIT))
        hi = min(hi, math.atanh(R_AXIS_LIMIT))
    must = (min(needed), max(needed)) if needed else (lo, hi)
    return lo, hi, False, must


def _set_effect_axis(ax, lo, hi, r_scale: bool, panel_pt: float, size: float, fixed: bool,
                     axis: str = "x", must=None):
    """Ticks at atanh(r) labelled r (ZCOR), or plain ticks; returns the final limits."""
    set_lim = ax.set_xlim if axis == "x" else ax.set_ylim
    set_ticks = ax.set_xticks if axis == "x" else ax.set_yticks
    if r_scale:
        rlo, rhi = math.tanh(lo), math.tanh(hi)
        rmust = (math.tanh(must[0]), math.tanh(must[1])) if must is not None else None
        nlo, nhi, ticks, dec = _nice_r_ticks(rlo, rhi, panel_pt, size, rmust)
        if fixed:
            nlo, nhi = rlo, rhi
            ticks = ticks[(ticks >= rlo - 1e-12) & (ticks <= rhi + 1e-12)]
        lo, hi = math.atanh(nlo), math.atanh(nhi)
        set_ticks(np.arctanh(ticks), [_fmt_tick_r(t, dec) for t in ticks])
    else:
        from matplotlib.ticker import MaxNLocator

        max_ticks = max(3, int(panel_pt / (4.0 * size)))
        locator = MaxNLocator(nbins=max_ticks - 1, steps=[1, 2, 2.5, 5, 10])
        ticks = locator.tick_values(lo, hi)
        if not fixed:
            lo, hi = float(ticks[0]), float(ticks[-1])
        ticks = ticks[(ticks >= lo - 1e-12) & (ticks <= hi + 1e-12)]
        set_ticks(ticks, [fmt_num(t, _decimals_for(ticks)) if abs(t) > 1e-12 else "0" for t in ticks])
    set_lim(lo, hi)
    return lo, hi


def _decimals_for(ticks) -> int:
    steps = np.diff(ticks)
    step = float(np.min(steps)) if len(steps) else 1.0
    return max(0, min(3, -int(math.floor(math.log10(step) + 1e-9)))) if step > 0 else 1


# --- drawing ---------------------------------------------------------------------------------------

def _draw_rows(ax, rows, columns, geom: _Geometry, *, r_scale: bool, xlim=None, xlabel=None,
               ref_line: float | None = None, null_line: float | None = 0.0, header: bool = True,
               title: str | None = None):
    """Draw rows (top to bottom) into ``ax``: the panel is the axes, text columns sit beside it."""
    from matplotlib import transforms
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Polygon, Rectangle

    fig = ax.figure
    size = geom.font_size
    n = len(rows) + (1 if header else 0)
    y0 = 1 if header else 0
    ys = np.arange(len(rows)) + y0
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="x", length=2.5, width=0.6, pad=2, labelsize=size)

    lo, hi, fixed, must = _axis_range(rows, xlim, r_scale)
    lo, hi = _set_effect_axis(ax, lo, hi, r_scale, geom.panel, size, fixed, must=must)
    ax.spines["bottom"].set_bounds(lo, hi)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=size, labelpad=3)

    base = transforms.blended_transform_factory(ax.transAxes, ax.transData)

    def at(x_pt: float, right_side: bool):
        anchor = 1.0 if right_side else 0.0
        return transforms.offset_copy(base, fig=fig, x=x_pt, y=0, units="points") if x_pt else base, anchor

    # panel width in axes fractions, for rules and bands that span the text columns
    ax_w_pt = ax.get_position().width * fig.get_figwidth() * PT_PER_INCH
    x_left = (-geom.left - 0.3 * size) / ax_w_pt
    x_right = 1 + (geom.right + 0.3 * size) / ax_w_pt

    # study bands (alternate shading per study) and rules
    for band in sorted({r.band for r in rows if r.band >= 0}):
        if band % 2:
            idx = [i for i, r in enumerate(rows) if r.band == band]
            top, bottom = ys[idx[0]] - 0.5, ys[idx[-1]] + 0.5
            ax.add_patch(Rectangle((x_left, top), x_right - x_left, bottom - top, transform=base,
                                   facecolor=_BAND, edgecolor="none", zorder=0, clip_on=False,
                                   gid="forest-band"))
    if header:
        ax.plot([x_left, x_right], [0.5, 0.5], transform=base, color="black", lw=0.6,
                clip_on=False, gid="forest-rule")
    if title:
        ax.text(x_left, -0.5 - 0.4, title, transform=base, ha="left", va="bottom",
                fontsize=size + 1, fontweight="bold", clip_on=False, gid="forest-title")

    # reference lines
    first = next((i for i, r in enumerate(rows) if r.kind in ("study", "point")), None)
    if null_line is not None and lo < null_line < hi:
        # the line stops at note rows, whose text may run across the panel
        runs, start = [], None
        for y, row in zip(ys, rows):
            if row.kind != "note" and start is None:
                start = y
            elif row.kind == "note" and start is not None:
                runs.append((start, y))
                start = None
        if start is not None:
            runs.append((start, n))
        for a, b in runs:
            ax.plot([null_line, null_line], [a - 0.5, b - 0.5], color=_GREY, lw=0.6, zorder=1,
                    gid="forest-null-line")
    if ref_line is not None and first is not None and lo < ref_line < hi:
        last = max(i for i, r in enumerate(rows) if r.kind in ("study", "point", "summary"))
        ax.plot([ref_line, ref_line], [ys[first] - 0.5, ys[last]], color=_GREY, lw=0.6,
                ls=(0, (3, 2)), zorder=1, gid="forest-ref-line")

    # text
    for col in columns:
        right_side = col.side == "right"
        x = col.offset + (col.width if col.align == "right" else 0.0)
        trans, anchor = at(x, right_side)
        if header:
            ax.text(anchor, 0, col.title, transform=trans, ha=col.align, va="center",
                    fontsize=size, fontweight="bold", clip_on=False, gid="forest-header")
        for y, row in zip(ys, rows):
            if row.kind == "note" and col.key != "label":
                continue
            text = row.cells.get(col.key, "")
            if not text:
                continue
            x_row = x + (row.indent * size if col.key == "label" else 0.0)
            trans_row, _ = at(x_row, right_side)
            gid = "forest-row-label" if col.key == "label" else f"forest-cell-{col.key}"
            ax.text(anchor, y, text, transform=trans_row, ha=col.align, va="center",
                    fontsize=size, fontweight="bold" if row.bold else "normal",
                    color=_GREY if row.kind == "note" else "black", clip_on=False, gid=gid)

    # intervals
    segs, arrows_l, arrows_r = [], [], []
    sq_x, sq_y, sq_s, pt_x, pt_y = [], [], [], [], []
    weights = [r.weight for r in rows if r.kind == "study" and np.isfinite(r.weight)]
    wmax = max(weights) if weights else 1.0
    side_max = 0.72 * geom.row_pt
    side_min = 0.22 * geom.row_pt
    for y, row in zip(ys, rows):
        if row.kind not in ("study", "point", "pi"):
            continue
        if not (np.isfinite(row.lo) and np.isfinite(row.hi)):
            continue
        a, b = max(row.lo, lo), min(row.hi, hi)
        if row.kind == "pi":
            continue
        if a < b:
            segs.append([(a, y), (b, y)])
        if row.lo < lo:
            arrows_l.append((lo, y))
        if row.hi > hi:
            arrows_r.append((hi, y))
        if lo <= row.est <= hi:
            if row.kind == "study" and np.isfinite(row.weight):
                side = max(side_min, side_max * math.sqrt(max(row.weight, 0.0) / wmax))
                sq_x.append(row.est)
                sq_y.append(y)
                sq_s.append(side ** 2)
            else:
                pt_x.append(row.est)
                pt_y.append(y)
    if segs:
        ax.add_collection(LineCollection(segs, colors="black", linewidths=0.7, zorder=2,
                                         gid="forest-ci"))
    if arrows_l:
        xs, yv = zip(*arrows_l)
        ax.scatter(xs, yv, marker="<", s=(0.45 * geom.row_pt) ** 2, color="black", lw=0,
                   zorder=3, clip_on=False, gid="forest-ci-arrow")
    if arrows_r:
        xs, yv = zip(*arrows_r)
        ax.scatter(xs, yv, marker=">", s=(0.45 * geom.row_pt) ** 2, color="black", lw=0,
                   zorder=3, clip_on=False, gid="forest-ci-arrow")
    if sq_x:
        ax.scatter(sq_x, sq_y, marker="s", s=sq_s, color="black", lw=0, zorder=3,
                   gid="forest-square")
    if pt_x:
        ax.scatter(pt_x, pt_y, marker="o", s=(0.4 * geom.row_pt) ** 2, color="black", lw=0,
                   zorder=3, gid="forest-point")

    for y, row in zip(ys, rows):
        if row.kind == "summary":
            h = 0.36
            poly = Polygon([(row.lo, y), (row.est, y - h), (row.hi, y), (row.est, y + h)],
                           closed=True, facecolor="black" if row.bold else "0.35",
                           edgecolor="black", lw=0.5, zorder=3, gid="forest-diamond")
            ax.add_patch(poly)
        elif row.kind == "pi" and np.isfinite(row.lo):
            a, b = max(row.lo, lo), min(row.hi, hi)
            cap = 0.22
            ax.plot([a, b], [y, y], color="black", lw=0.8, zorder=3, gid="forest-pi")
            for xv, inside in ((a, row.lo >= lo), (b, row.hi <= hi)):
                if inside:
                    ax.plot([xv, xv], [y - cap, y + cap], color="black", lw=0.8, zorder=3,
                            gid="forest-pi-cap")
            if row.lo < lo:
                ax.scatter([lo], [y], marker="<", s=(0.45 * geom.row_pt) ** 2, color="black",
                           lw=0, zorder=3, clip_on=False, gid="forest-ci-arrow")
            if row.hi > hi:
                ax.scatter([hi], [y], marker=">", s=(0.45 * geom.row_pt) ** 2, color="black",
                           lw=0, zorder=3, clip_on=False, gid="forest-ci-arrow")
    return ax


def _frame_pt(size: float, *, xlabel=True, title=False):
    """Heights in pt above the header row (title) and below the last row (axis, its label)."""
    top = 0.6 * size + (2.0 * size if title else 0.0)
    bottom = (1.5 + 1.0 + (1.6 if xlabel else 0.0)) * size
    return top, bottom


def _figure_for_rows(n_rows: int, geom: _Geometry, width_in: float, *, header=True, xlabel=True,
                     title=False):
    """A figure whose height fits ``n_rows`` rows, and its axes placed beside the text columns."""
    top_pt, bottom_pt = _frame_pt(geom.font_size, xlabel=xlabel, title=title)
    rows_pt = (n_rows + (1 if header else 0)) * geom.row_pt
    height_pt = top_pt + rows_pt + bottom_pt
    width_pt = width_in * PT_PER_INCH
    fig = _new_figure(width_in, height_pt / PT_PER_INCH)
    left = (geom.margin + geom.left) / width_pt
    ax = fig.add_axes([left, bottom_pt / height_pt, geom.panel / width_pt, rows_pt / height_pt])
    return fig, ax


def _page_chunks(rows, per_page: int):
    """Split rows into pages of at most ``per_page`` rows without breaking a keep group."""
    pages, current = [], []
    i = 0
    while i < len(rows):
        j = i
        while j < len(rows) and rows[j].keep == rows[i].keep:
            j += 1
        group = rows[i:j]
        while len(group) > per_page:  # a group longer than a page must break
            room = per_page - len(current)
            current += group[:room]
            pages.append(current)
            current, group = [], group[room:]
        if len(current) + len(group) > per_page:
            pages.append(current)
            current = []
        current = current + group
        i = j
    if current:
        pages.append(current)
    # a page must not start with a blank row
    pages = [[r for k, r in enumerate(p) if not (k == 0 and r.kind == "blank")] for p in pages]
    # a page that starts inside a subgroup block repeats the block's head, marked as continued
    heads = {}
    for r in rows:
        if r.block >= 0 and r.kind == "group" and r.bold:
            heads.setdefault(r.block, r)
    for page in pages[1:]:
        first = page[0] if page else None
        if first is not None and first.block in heads and first is not heads[first.block]:
            head = heads[first.block]
            page.insert(0, _Row("group", {"label": f"{head.cells['label']} (continued)"},
                                bold=True, keep=head.keep, block=head.block))
    return pages


def _render(rows, columns, *, ax, width, font_size, r_scale, xlim, xlabel, ref_line, title,
            pages: bool, page_height_mm: float, max_rows: int | None = None):
    """Lay out and draw: into ``ax``; or one figure; or one figure per page."""
    import matplotlib

    with matplotlib.rc_context(journal_rc(font_size)):
        if ax is not None:
            fig = ax.figure
            pos = ax.get_position()
            height_pt = pos.height * fig.get_figheight() * PT_PER_INCH
            panel_pt = pos.width * fig.get_figwidth() * PT_PER_INCH
            size = font_size
            fit = height_pt / ((len(rows) + 1.2) * ROW_PITCH_EM)
            if fit < size:
                size = max(MIN_FONT_SIZE, fit)
                if fit < MIN_FONT_SIZE:
                    warnings.warn(
                        f"{len(rows)} rows do not fit in these axes without overlapping text: use "
                        "a taller figure or forest_figures() for pages", MetaAllianceWarning)
            geom = _layout(rows, columns, None, size, fixed_panel=panel_pt)
            rows = _wrap_notes(rows, geom.left + geom.panel + geom.right, geom.font_size)
            _draw_rows(ax, rows, columns, geom, r_scale=r_scale, xlim=xlim, xlabel=xlabel,
                       ref_line=ref_line, title=title)
            return [ax]
        width_in = width_inches(width)
        width_pt = width_in * PT_PER_INCH
        geom = _layout(rows, columns, width_pt, font_size)
        rows = _wrap_notes(rows, width_pt - 2 * geom.margin, geom.font_size)
        if pages:
            page_pt = page_height_mm / MM_PER_INCH * PT_PER_INCH
            frame = sum(_frame_pt(geom.font_size, xlabel=bool(xlabel), title=True))
            per_page = max_rows or int((page_pt - frame) / geom.row_pt) - 1
            if any(r.block >= 0 for r in rows):
                per_page -= 1  # room for a repeated subgroup head
            chunks = _page_chunks(rows, max(per_page, 8))
        else:
            chunks = [rows]
        axes = []
        for i, chunk in enumerate(chunks):
            page_title = title
            if len(chunks) > 1:
                page = f"page {i + 1} of {len(chunks)}"
                page_title = f"{title} ({page})" if title else page.capitalize()
            fig, page_ax = _figure_for_rows(len(chunk), geom, width_in, title=bool(page_title),
                                            xlabel=bool(xlabel))
            _draw_rows(page_ax, chunk, columns, geom, r_scale=r_scale, xlim=xlim, xlabel=xlabel,
                       ref_line=ref_line, title=page_title)
            axes.append(page_ax)
        return axes
