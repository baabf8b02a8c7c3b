"""Journal-ready figures: forest, cumulative and leave-one-out forest, funnel and bubble plots.

With ``plots_bias.py`` this is the only module that imports matplotlib. Every public plotting
function follows scikit-learn's convention: with ``ax=None`` it creates a figure sized for its
content (width from a journal preset, height from the number of rows), with a given ``ax`` it draws
into it; it returns the axes and never calls ``plt.show()``. Figures are created with
``matplotlib.figure.Figure`` (not pyplot), so nothing accumulates in pyplot's global state.

Models are fitted on Fisher's z. When a result's measure is ``"ZCOR"`` the effect axis is shown in
r: ticks sit at atanh(r) and are labelled with r; the text columns show r as well.

Artists carry gids (``forest-square``, ``forest-ci``, ``forest-ci-arrow``, ``forest-diamond``,
``forest-pi``, ``forest-row-label``...), so tests and SVG post-processing can find them.

Example
-------
>>> import numpy as np
>>> from metaalliance.figures import plots
>>> rows = plots.IntervalTable(labels=["A", "B"], estimate=[0.2, 0.3],
...                            ci_lower=[0.0, 0.1], ci_upper=[0.4, 0.5])
>>> ax = plots.interval_plot(rows)
>>> len(ax.figure.axes)
1
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from metaalliance.errors import DataError, MetaAllianceWarning, OptionError
from metaalliance.options import check_option
from metaalliance.formatting import distinct_labels, fmt_ci, fmt_est_ci, fmt_int, fmt_num, fmt_p, fmt_pct, fmt_r

# --- presets -----------------------------------------------------------------------------------

#: journal column widths in mm (Elsevier/APA/Springer style: single, 1.5 and double column)
JOURNAL_WIDTHS_MM = {"single": 84.0, "onehalf": 129.0, "double": 174.0}
#: output formats savefig writes for us
FORMATS = ("pdf", "svg", "eps", "png", "tiff")
#: sort orders of forest-plot rows
SORTS = ("estimate", "year", "label")
#: columns a forest plot can show besides the study label; any other findings column works too
COLUMN_TITLES = {
    "label": "Study",
    "instrument": "Instrument",
    "rater": "Rater",
    "timing": "Timing",
    "n": "N",
    "k": "k",
    "year": "Year",
    "outcome_measure": "Outcome",
    "outcome_domain": "Domain",
    "population": "Population",
    "diagnosis": "Diagnosis",
    "treatment": "Treatment",
    "setting": "Setting",
    "modality": "Modality",
    "design": "Design",
    "effect_type": "Effect",
    "weight": "Weight",
    "ci": "r [95% CI]",
}
#: columns drawn right of the plot panel (numbers about the interval); all others go left
RIGHT_COLUMNS = ("weight", "ci")
#: columns whose text is right-aligned (numbers)
NUMERIC_COLUMNS = ("n", "k", "year", "weight", "ci")
DEFAULT_COLUMNS = ("instrument", "rater", "n", "weight", "ci")

MM_PER_INCH = 25.4
PT_PER_INCH = 72.0
#: figure text size in pt: journals ask for 6-8 pt at final print size
FONT_SIZE = 7.0
#: smallest size the layout shrinks to before it gives up (legibility limit in print)
MIN_FONT_SIZE = 5.0
#: vertical pitch of one row, in multiples of the font size: 1.5 leaves room for ascenders and
#: descenders of two neighbouring rows plus a visible gap, so text never touches
ROW_PITCH_EM = 1.5
#: usable height of a journal page (A4 / US letter text block) when a forest plot is paged
PAGE_HEIGHT_MM = 230.0
#: measured text widths get 2% more, for rounding of glyph positions
TEXT_WIDTH_SAFETY = 1.02
#: r axis is cut at +-0.95: atanh grows without bound towards +-1, so wider CIs get arrows
R_AXIS_LIMIT = 0.95
#: the panel keeps at least this share of the figure width (else the font shrinks)
MIN_PANEL_SHARE = 0.3

_GREY = "0.45"
_BAND = "0.93"  # solid colours only: EPS has no transparency


# --- style -------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def font_family() -> str:
    """The first installed font of Arial, Helvetica, Liberation Sans (Arial's metric twin), DejaVu Sans.

    Resolved once, so matplotlib never logs "font family not found" for the ones missing.
    """
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist if f.fname.lower().endswith(".ttf")}
    for family in ("Arial", "Helvetica", "Liberation Sans", "DejaVu Sans"):
        if family in names:
            return family
    return "DejaVu Sans"


def journal_rc(font_size: float = FONT_SIZE) -> dict:
    """rcParams for print: TrueType fonts embedded in PDF/EPS (fonttype 42), thin lines, one font."""
    return {
        # the family by name, not "sans-serif": a Text resolves a generic family when it is
        # drawn, outside this context, and would fall back to another (wider) font
        "font.family": [font_family()],
        "font.size": font_size,
        "axes.labelsize": font_size,
        "axes.titlesize": font_size,
        "xtick.labelsize": font_size,
        "ytick.labelsize": font_size,
        "legend.fontsize": font_size,
        "axes.linewidth": 0.6,
        "xtick.major.width": 0.6,
        "ytick.major.width": 0.6,
        "xtick.major.size": 2.5,
        "ytick.major.size": 2.5,
        "lines.linewidth": 0.8,
        "axes.unicode_minus": True,
        "pdf.fonttype": 42,
        "ps.fonttype": 42,
        "svg.fonttype": "path",
        "svg.hashsalt": "metaalliance",  # stable ids: the same figure gives the same file
        "figure.dpi": 100,
        "savefig.dpi": 600,
        "savefig.facecolor": "white",
    }


def width_inches(width) -> float:
    """A width given as a preset name ('single', 'onehalf', 'double') or in mm, in inches."""
    if isinstance(width, str):
        check_option("width", width, tuple(JOURNAL_WIDTHS_MM))
        width = JOURNAL_WIDTHS_MM[width]
    width = float(width)
    if not 30 <= width <= 600:
        raise OptionError(f"width: {width:g} mm is outside 30-600 mm")
    return width / MM_PER_INCH


def _new_figure(width_in: float, height_in: float):
    """A figure outside pyplot (nothing global), with an Agg canvas so that it can be drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in))
    FigureCanvasAgg(fig)
    return fig


def save_figure(figures, path, *, dpi: int = 600, metadata_title: str | None = None) -> list[Path]:
    """Write one figure or a list of pages to ``path``; the format follows the suffix.

    Several pages go into one multi-page PDF, or for the other formats into ``name-p1.png``,
    ``name-p2.png`` ... Fonts are embedded as TrueType (pdf/ps fonttype 42). Dates are left out
    of the metadata, so the same figure gives the same file. Returns the paths written.
    """
    import matplotlib
    from matplotlib.figure import Figure

    from metaalliance import __version__

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt == "tif":
        fmt = "tiff"
    check_option("format (file suffix)", fmt, FORMATS)
    if not 50 <= int(dpi) <= 2400:
        raise OptionError(f"dpi: {dpi} is outside 50-2400")
    pages = [figures] if isinstance(figures, Figure) else list(figures)
    if not pages:
        raise DataError("save_figure: no figure to write")
    meta = {"pdf": {"Creator": f"metaalliance {__version__}", "CreationDate": None},
            "svg": {"Creator": f"metaalliance {__version__}", "Date": None},
            "png": {"Software": f"metaalliance {__version__}"},
            "eps": {"Creator": f"metaalliance {__version__}"}}.get(fmt)
    if meta is not None and metadata_title and fmt in ("pdf", "svg", "eps"):
        meta["Title"] = metadata_title
    kwargs = {"format": fmt, "dpi": int(dpi), "metadata": meta}
    if fmt == "tiff":
        kwargs["pil_kwargs"] = {"compression": "tiff_lzw"}
        kwargs.pop("metadata")
    import io

    from metaalliance.dataset.fileio import write_all

    # rendered into memory first, then written all-or-nothing (fileio.write_all): an
    # interrupted run never leaves a partial image or half of a set of pages
    files = {}
    with matplotlib.rc_context(journal_rc()):
        if fmt == "pdf" and len(pages) > 1:
            from matplotlib.backends.backend_pdf import PdfPages

            buf = io.BytesIO()
            with PdfPages(buf, metadata=meta) as pdf:
                for fig in pages:
                    pdf.savefig(fig)
            files[path] = buf.getvalue()
        else:
            for i, fig in enumerate(pages, start=1):
                target = path if len(pages) == 1 else path.with_name(f"{path.stem}-p{i}{path.suffix}")
                buf = io.BytesIO()
                fig.savefig(buf, **kwargs)
                files[target] = buf.getvalue()
    write_all(files)
    written = list(files)
    return written


# --- text measurement ----------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _renderer(dpi: int):
    from matplotlib.backends.backend_agg import RendererAgg

    return RendererAgg(16, 16, dpi)


#: text is measured at these dpi and the widest kept: hinting makes text up to ~8% wider on
#: screen-resolution rasters (100 dpi) than in vector output (720 dpi is within 1% of PDF)
MEASURE_DPI = (100, 720)


@lru_cache(maxsize=8192)
def _text_width_pt(text: str, size: float, bold: bool) -> float:
    from matplotlib.font_manager import FontProperties

    if not text:
        return 0.0
    prop = FontProperties(family=font_family(), size=size, weight="bold" if bold else "normal")
    width = max(_renderer(dpi).get_text_width_height_descent(text, prop, ismath=False)[0]
                * PT_PER_INCH / dpi for dpi in MEASURE_DPI)
    return width * TEXT_WIDTH_SAFETY


def _clean(text) -> str:
    """Cell text: '' for missing values; '$' escaped so that matplotlib never reads mathtext."""
    if text is None:
        return ""
    if isinstance(text, float) and math.isnan(text):
        return ""
    try:
        import pandas as pd

        if pd.isna(text):
            return ""
    except (TypeError, ValueError):
        pass
    return str(text).replace("$", r"\$")


def _truncate(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "\u2026"


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


# --- building rows from results ------------------------------------------------------------------

def _is_r_scale(result, scale: str) -> bool:
    check_option("scale", scale, ("auto", "r", "z"))
    if scale == "auto":
        return getattr(result, "measure", "ZCOR") == "ZCOR"
    return scale == "r"


def _crit(level: float) -> float:
    from metaalliance.engine.distributions import norm

    return float(norm.ppf(0.5 + float(level) / 200.0))


def _display(x, r_scale: bool) -> float:
    return math.tanh(x) if r_scale else x


def _est_text(est, lo, hi, r_scale: bool) -> str:
    if r_scale:
        return fmt_est_ci(math.tanh(est), math.tanh(lo), math.tanh(hi))
    return fmt_est_ci(est, lo, hi, r=False)


def _model_weights(result) -> np.ndarray:
    """Percent weights of the rows in the fitted model (``result.weights``: metafor's
    weights(), for a three-level fit the diagonal of the inverse marginal covariance); for a
    record without them, inverse-variance weights 1/(vi + tau^2)."""
    w = getattr(result, "weights", None)
    if w is not None:
        w = np.asarray(w, dtype=float)
        if w.shape == np.shape(result.yi) and np.all(np.isfinite(w)):
            return w
    return _iv_weights(result.vi, getattr(result, "tau2", 0.0) or 0.0)


def _iv_weights(vi, tau2: float) -> np.ndarray:
    """Random-effects weights 1/(vi + tau^2), in percent."""
    w = 1.0 / (np.asarray(vi, dtype=float) + float(tau2))
    return 100 * w / w.sum()


def _as_frame(result, data):
    import pandas as pd

    k = len(np.asarray(result.yi))
    if data is None:
        labels = getattr(result, "labels", None)
        if labels is None or len(labels) != k:
            labels = [f"Study {i + 1}" for i in range(k)]
        return pd.DataFrame({"label": [str(v) for v in labels]})
    frame = data.reset_index(drop=True)
    if len(frame) != k:
        raise DataError(f"data has {len(frame)} rows but the result has k = {k}: pass the rows "
                        "the model was fitted on, in the same order")
    if "label" not in frame.columns:
        labels = getattr(result, "labels", None)
        frame = frame.assign(label=[str(v) for v in labels] if labels is not None and len(labels) == k
                             else [f"Study {i + 1}" for i in range(k)])
    return frame


_DESCRIPTOR_FIELDS = ("outcome_measure", "rater", "instrument", "timing", "outcome_domain")


def _descriptors(frame, members, varying, max_chars: int) -> dict:
    """What tells a study's findings apart: the fields that vary within it (at most two),
    shortened; the finding id is added where shortened texts would coincide."""
    fids = {i: (_clean(frame.at[i, "finding_id"]) if "finding_id" in frame.columns else "")
            or f"finding {n + 1}" for n, i in enumerate(members)}
    full = {}
    for i in members:
        parts = [_clean(frame.at[i, f]) for f in varying[:2]]
        full[i] = ", ".join(p for p in parts if p) or fids[i]
    short = {i: _truncate(t, max_chars) for i, t in full.items()}
    counts = {}
    for t in short.values():
        counts[t] = counts.get(t, 0) + 1
    for i, t in short.items():
        if counts[t] > 1 and full[i] != fids[i]:
            tag = f" ({fids[i]})"
            short[i] = _truncate(full[i], max_chars - len(tag)) + tag
    return short


def _finding_rows(yi, vi, weights, frame, columns, *, sort, r_scale, level, group_by, keep0=0,
                  band0=0, max_chars=40, indices=None):
    """One row per finding; findings of one study (``group_by``) stay together under its label."""
    yi = np.asarray(yi, dtype=float)
    vi = np.asarray(vi, dtype=float)
    if np.any(~np.isfinite(yi)) or np.any(~np.isfinite(vi)) or np.any(vi <= 0):
        raise DataError("forest plot: every yi must be finite and every vi positive")
    crit = _crit(level)
    idx = np.arange(len(yi)) if indices is None else np.asarray(indices)
    keys = [k for k in columns if k not in ("label", "weight", "ci")]
    missing = [k for k in keys if k not in frame.columns]
    if missing:
        raise DataError(f"forest plot: column(s) {', '.join(missing)} not in the data; "
                        f"available: {', '.join(map(str, frame.columns))}")
    if sort is not None:
        check_option("sort", sort, SORTS)
        if sort == "year" and "year" not in frame.columns:
            raise DataError("forest plot: sort='year' needs a year column in the data")

    gcol = group_by if group_by in frame.columns else "label"
    groups: dict = {}
    for i in idx:
        groups.setdefault(frame.at[i, gcol], []).append(i)
    group_list = list(groups.values())

    def group_key(members):
        first = members[0]
        if sort == "estimate":
            return (float(np.mean(yi[members])), str(frame.at[first, "label"]))
        if sort == "year":
            return (int(frame.at[first, "year"]), str(frame.at[first, "label"]))
        if sort == "label":
            return (str(frame.at[first, "label"]), 0)
        return (0, 0)

    if sort is not None:
        group_list.sort(key=group_key)
    # two groups (e.g. two samples of one paper) with one label: add what tells them apart
    heads = distinct_labels([_clean(frame.at[m[0], "label"]) for m in group_list],
                            [str(frame.at[m[0], gcol]) for m in group_list])
    rows = []
    for g, members in enumerate(group_list):
        if sort == "estimate":
            members = sorted(members, key=lambda i: yi[i])
        band = band0 + g
        keep = keep0 + g
        label = _truncate(heads[g], max_chars)
        if len(members) > 1:
            rows.append(_Row("group", {"label": label}, band=band, keep=keep))
            varying = [f for f in _DESCRIPTOR_FIELDS if f in frame.columns and f not in keys
                       and frame.loc[members, f].astype(str).nunique() > 1]
        descriptors = _descriptors(frame, members, varying, max_chars - 2) if len(members) > 1 else {}
        for i in members:
            se = math.sqrt(vi[i])
            cells = {"label": descriptors.get(i, label)}
            for key in keys:
                value = frame.at[i, key]
                if key in ("n", "k", "year") and _clean(value):
                    cells[key] = fmt_int(value)
                else:
                    cells[key] = _truncate(_clean(value), max_chars)
            if weights is not None:
                cells["weight"] = fmt_pct(weights[i])
            lo, hi = yi[i] - crit * se, yi[i] + crit * se
            cells["ci"] = _est_text(yi[i], lo, hi, r_scale)
            rows.append(_Row("study", cells, est=yi[i], lo=lo, hi=hi,
                             weight=float(weights[i]) if weights is not None else math.nan,
                             indent=1 if len(members) > 1 else 0, band=band, keep=keep))
    return rows


def _summary_values(result):
    """estimate, CI and PI of a fitted model on its own scale."""
    est = float(result.estimate)
    lo, hi = float(result.ci_lower), float(result.ci_upper)
    pi_lo = getattr(result, "pi_lower", None)
    pi_hi = getattr(result, "pi_upper", None)
    pi = None
    if pi_lo is not None and pi_hi is not None and np.isfinite(pi_lo) and np.isfinite(pi_hi):
        pi = (float(pi_lo), float(pi_hi))
    return est, lo, hi, pi


def model_name(result) -> str:
    """'Random-effects model (REML)', 'Equal-effects model', 'Three-level model (REML)'."""
    method = getattr(result, "method_used", None) or getattr(result, "method", "REML")
    if getattr(result, "sigma2", None) is not None:
        return f"Three-level model ({method})"
    if method == "EE":
        return "Equal-effects model"
    return f"Random-effects model ({method})"


def heterogeneity_text(result) -> str:
    """One line: 'Heterogeneity: \u03c4\u00b2 = 0.012; I\u00b2 = 45.1%; Q(15) = 27.31, p = .026'."""
    parts = []
    sigma2 = getattr(result, "sigma2", None)
    if sigma2 is not None:
        s = [float(v) for v in sigma2]
        parts.append(f"\u03c3\u00b2 between = {fmt_num(s[0], 3)}")
        parts.append(f"\u03c3\u00b2 within = {fmt_num(s[1], 3)}")
    else:
        tau2 = getattr(result, "tau2", None)
        if tau2 is not None:
            parts.append(f"\u03c4\u00b2 = {fmt_num(tau2, 3)}")
        i2 = getattr(result, "i2", None)
        if i2 is not None:
            parts.append(f"I\u00b2 = {fmt_pct(i2)}")
    q = getattr(result, "q", None)
    q_df = getattr(result, "q_df", None)
    if q_df is None and q is not None:
        q_df = int(getattr(result, "k", len(result.yi))) - 1
    if q is not None:
        text = f"Q({int(q_df)}) = {fmt_num(q)}"
        q_p = getattr(result, "q_pvalue", None)
        if q_p is not None:
            text += f", {fmt_p(q_p)}"
        parts.append(text)
    return "Heterogeneity: " + "; ".join(parts) if parts else ""


def _summary_rows(result, *, r_scale, label, show_pi, level, keep, bold=True, note=True,
                  weight_text="100%", group_by="citekey"):
    est, lo, hi, pi = _summary_values(result)
    rows = [_Row("summary", {"label": label, "ci": _est_text(est, lo, hi, r_scale),
                             "weight": weight_text},
                 est=est, lo=lo, hi=hi, bold=bold, keep=keep)]
    if show_pi and pi is not None:
        text = fmt_ci(_display(pi[0], r_scale), _display(pi[1], r_scale), r=r_scale)
        rows.append(_Row("pi", {"label": f"{level:g}% prediction interval", "ci": text},
                         est=est, lo=pi[0], hi=pi[1], indent=1, keep=keep))
    if note:
        text = heterogeneity_text(result)
        k_text = _k_text(result, group_by)
        text = f"{k_text}; {text[0].lower()}{text[1:]}" if text else k_text
        rows.append(_Row("note", {"label": text}, indent=1, keep=keep))
    return rows


#: what the clusters of a three-level model are called, by the column that defines them
CLUSTER_NOUNS = {"citekey": "studies", "sample": "samples", "label": "studies"}


def _k_text(result, group_by: str = "citekey") -> str:
    k = int(getattr(result, "k", len(np.asarray(result.yi))))
    n_clusters = getattr(result, "n_clusters", None)
    if n_clusters is not None:
        return f"k = {k} findings in {int(n_clusters)} {CLUSTER_NOUNS.get(group_by, 'clusters')}"
    return f"k = {k}"


def _subgroup_parts(subgroups, frame):
    """(level, summary, fit or None, row indices) per subgroup, and the between-groups test.

    ``subgroups`` is the engine's SubgroupResult: ``subgroups`` (SubgroupEstimate per level),
    ``models`` (level -> RandomEffectsResult with tau2_model "separate") and ``by``, the data
    column whose levels split the rows."""
    by = getattr(subgroups, "by", None)
    estimates = getattr(subgroups, "subgroups", None)
    if by is None or estimates is None:
        raise DataError("forest plot: expected a SubgroupResult (models.subgroups(...))")
    if by not in frame.columns:
        raise DataError(f"forest plot: the subgroups split by {by!r}, which is not a column of "
                        "data (pass the rows the subgroups were fitted on)")
    groups = frame[by].astype(str).to_numpy()
    models = getattr(subgroups, "models", {}) or {}
    parts = []
    for est in estimates:
        idx = np.flatnonzero(groups == str(est.level))
        if len(idx) != est.k:
            raise DataError(f"forest plot: subgroup {by} = {est.level} has k = {est.k} in the "
                            f"result but {len(idx)} rows in data")
        fit = models.get(str(est.level))
        parts.append((str(est.level), est, fit, idx))
    test = (subgroups.q_between, subgroups.q_between_df, getattr(subgroups, "q_between_df2", None),
            subgroups.q_between_pvalue)
    return parts, test


def _columns_for(columns, frame) -> list:
    """The requested columns; the default set keeps only those the data has."""
    if columns is None:
        return [c for c in DEFAULT_COLUMNS if c in RIGHT_COLUMNS or c in frame.columns]
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    missing = [c for c in columns if c not in RIGHT_COLUMNS and c != "label"
               and c not in frame.columns]
    if missing:
        raise DataError(f"forest plot: column(s) {', '.join(missing)} not in the data; "
                        f"available: {', '.join(map(str, frame.columns))}, weight, ci")
    return list(columns)


# --- public plotting functions --------------------------------------------------------------------

def forest_rows(result, *, data=None, subgroups=None, columns=None, sort=None, group_by="citekey",
                show_pi=True, summary_label=None, show_studies=True, by_label=None):
    """The table a forest plot draws (list of rows); used by forest_plot() and forest_figures()."""
    rows: list[_Row] = []
    if subgroups is None:
        if result is None:
            raise DataError("forest plot: nothing to draw (no result and no subgroups)")
        r_scale = _is_r_scale(result, "auto")
        level = float(getattr(result, "level", 95))
        frame = _as_frame(result, data)
        cols = _columns_for(columns, frame)
        weights = _model_weights(result)
        if show_studies:
            rows += _finding_rows(result.yi, result.vi, weights, frame, cols, sort=sort,
                                  r_scale=r_scale, level=level, group_by=group_by)
        label = summary_label or model_name(result)
        rows += [_Row("blank", keep=10**6)] if show_studies else []
        rows += _summary_rows(result, r_scale=r_scale, label=label, show_pi=show_pi, level=level,
                              keep=10**6, group_by=group_by)
        return rows, cols, r_scale, level

    if data is None:
        raise DataError("forest plot with subgroups needs data (the rows the subgroups split)")
    frame = data.reset_index(drop=True)
    if "label" not in frame.columns:
        raise DataError("forest plot: data needs a label column")
    parts, (qb, qb_df, qb_df2, qb_p) = _subgroup_parts(subgroups, frame)
    r_scale = getattr(subgroups, "measure", "ZCOR") == "ZCOR"
    level = float(getattr(subgroups, "level", 95))
    by_label = by_label if by_label is not None else str(subgroups.by).replace("_", " ").capitalize()
    cols = _columns_for(columns, frame)
    if result is not None and len(np.asarray(result.yi)) != len(frame):
        raise DataError(f"forest plot: data has {len(frame)} rows but the overall result has "
                        f"k = {len(np.asarray(result.yi))}")
    yi_all = frame["yi"].to_numpy(dtype=float) if "yi" in frame.columns else np.asarray(result.yi)
    vi_all = frame["vi"].to_numpy(dtype=float) if "vi" in frame.columns else np.asarray(result.vi)
    band0 = 0
    keep = 0
    for level_name, est, fit, idx in parts:
        keep += 1
        summary = fit if fit is not None else est
        head = f"{by_label}: {level_name}" if by_label else level_name
        if not show_studies:  # one diamond per subgroup
            rows += _summary_rows(summary, r_scale=r_scale, label=f"{head} (k = {est.k})",
                                  show_pi=False, level=level, keep=keep, bold=False, note=False,
                                  weight_text="")
            continue
        first_row = len(rows)
        rows.append(_Row("group", {"label": head}, bold=True, keep=keep * 10**4))
        sub = frame.iloc[idx].reset_index(drop=True)
        yi, vi = yi_all[idx], vi_all[idx]
        if fit is not None:
            w = _model_weights(fit)
        else:  # a common tau^2: inverse-variance weights within the subgroup
            w = _iv_weights(vi, est.tau2)
        part_rows = _finding_rows(yi, vi, w, sub, cols, sort=sort, r_scale=r_scale, level=level,
                                  group_by=group_by, keep0=keep * 10**4, band0=band0)
        band0 += len({r.band for r in part_rows})
        rows += part_rows
        rows += _summary_rows(summary, r_scale=r_scale, label="Subgroup estimate",
                              show_pi=show_pi, level=level, keep=keep * 10**4 + 9999, bold=False,
                              weight_text="", note=fit is not None, group_by=group_by)
        rows.append(_Row("blank", keep=keep * 10**4 + 9999))
        for r in rows[first_row:]:
            r.block = keep
    if not show_studies:
        rows.append(_Row("blank", keep=10**6))
    if result is not None:
        label = summary_label or f"Overall: {model_name(result)}"
        rows += _summary_rows(result, r_scale=r_scale, label=label, show_pi=show_pi, level=level,
                              keep=10**6, group_by=group_by)
    stat = f"F({int(qb_df)}, {int(qb_df2)})" if qb_df2 is not None else f"Q({int(qb_df)})"
    rows.append(_Row("note", {"label": f"Test for subgroup differences: {stat} = {fmt_num(qb)}, "
                                       f"{fmt_p(qb_p)}"}, keep=10**6))
    return rows, cols, r_scale, level


def forest_plot(result, ax=None, *, data=None, subgroups=None, columns=None, sort=None,
                group_by="citekey", show_pi=True, show_studies=True, summary_label=None,
                by_label=None, width="double", font_size=FONT_SIZE, xlim=None, xlabel=None,
                title=None, column_titles=None):
    """Draw a forest plot of a fitted model and return the axes.

    Parameters
    ----------
    result : RandomEffectsResult or ThreeLevelResult (or None with ``subgroups``)
        The fitted model; its ``yi``, ``vi`` and weights give the rows, its estimate, CI and PI
        the summary diamond and prediction interval.
    ax : matplotlib Axes, optional
        Draw into these axes (the text columns are placed beside them; leave room in the figure).
        With None a figure is created: width from ``width``, height from the number of rows.
    data : DataFrame, optional
        The findings rows the model was fitted on, in the same order (``label``, ``citekey`` and
        the columns to show).
    subgroups : SubgroupResult, optional
        Draw one block per subgroup, each with its own diamond, and the Q-between line.
    columns : sequence of str
        Columns besides the label: any data column (instrument, rater, n, year...), ``weight``
        (percent) and ``ci`` (estimate with CI). Default: instrument, rater, n, weight, ci.
    sort : 'estimate', 'year', 'label' or None (data order)
    group_by : column that identifies a study; its findings are drawn together under its label.
    width : 'single' (84 mm), 'onehalf' (129 mm), 'double' (174 mm) or a width in mm.
    xlim : (lower, upper) on the display scale (r for correlations); CIs beyond get arrows.

    Returns
    -------
    matplotlib.axes.Axes
    """
    rows, cols, r_scale, level = forest_rows(result, data=data, subgroups=subgroups,
                                             columns=columns, sort=sort, group_by=group_by,
                                             show_pi=show_pi, summary_label=summary_label,
                                             show_studies=show_studies, by_label=by_label)
    columns_ = _make_columns(cols, r_scale, level, column_titles)
    ref = float(result.estimate) if result is not None else None
    xlabel = _xlabel(r_scale) if xlabel is None else xlabel
    return _render(rows, columns_, ax=ax, width=width, font_size=font_size, r_scale=r_scale,
                   xlim=xlim, xlabel=xlabel, ref_line=ref, title=title, pages=False,
                   page_height_mm=PAGE_HEIGHT_MM)[0]


def forest_figures(result, *, max_rows=None, page_height_mm=PAGE_HEIGHT_MM, **kwargs):
    """Like forest_plot(), split into pages that fit a journal page; returns a list of figures.

    Study groups and the summary block are never split across pages; every page repeats the
    column headers and uses the same axis, so pages can be read side by side.
    """
    ax = kwargs.pop("ax", None)
    if ax is not None:
        raise OptionError("forest_figures() makes its own figures: use forest_plot(ax=...) instead")
    rows, cols, r_scale, level = forest_rows(
        result, data=kwargs.pop("data", None), subgroups=kwargs.pop("subgroups", None),
        columns=kwargs.pop("columns", None), sort=kwargs.pop("sort", None),
        group_by=kwargs.pop("group_by", "citekey"), show_pi=kwargs.pop("show_pi", True),
        summary_label=kwargs.pop("summary_label", None),
        show_studies=kwargs.pop("show_studies", True), by_label=kwargs.pop("by_label", None))
    columns_ = _make_columns(cols, r_scale, level, kwargs.pop("column_titles", None))
    ref = float(result.estimate) if result is not None else None
    xlabel = kwargs.pop("xlabel", None)
    xlabel = _xlabel(r_scale) if xlabel is None else xlabel
    xlim = kwargs.pop("xlim", None)
    if xlim is None:
        # one axis for all pages
        lo, hi, _, must = _axis_range(rows, None, r_scale)
        if r_scale:
            panel = 0.4 * width_inches(kwargs.get("width", "double")) * PT_PER_INCH
            rmust = (math.tanh(must[0]), math.tanh(must[1]))
            xlim = _nice_r_ticks(math.tanh(lo), math.tanh(hi), panel, FONT_SIZE, rmust)[:2]
        else:
            xlim = (lo, hi)
    axes = _render(rows, columns_, ax=None, width=kwargs.pop("width", "double"),
                   font_size=kwargs.pop("font_size", FONT_SIZE), r_scale=r_scale, xlim=xlim,
                   xlabel=xlabel, ref_line=ref, title=kwargs.pop("title", None), pages=True,
                   page_height_mm=page_height_mm, max_rows=max_rows)
    if kwargs:
        raise OptionError(f"forest_figures: unknown option(s) {', '.join(kwargs)}")
    return [a.figure for a in axes]


def _xlabel(r_scale: bool) -> str:
    return "Correlation r (Fisher z axis)" if r_scale else "Effect size"


# --- interval tables: cumulative, leave-one-out, subgroup summaries --------------------------------

@dataclass
class IntervalTable:
    """Rows of estimates with CIs on the model scale, for interval_plot().

    ``extra`` maps a column key to one text per row (e.g. {"k": [...], "tau2": [...]}).
    """

    labels: list
    estimate: list
    ci_lower: list
    ci_upper: list
    extra: dict = field(default_factory=dict)
    extra_titles: dict = field(default_factory=dict)
    measure: str = "ZCOR"
    level: float = 95.0


def _table_from(records, *, label_key="label", measure="ZCOR", level=95.0, extra=()):
    """An IntervalTable from a sensitivity result (``to_frame()``), a DataFrame or a list of
    dicts with label, estimate, ci_lower, ci_upper on the model scale."""
    import pandas as pd

    if isinstance(records, IntervalTable):
        return records
    level = float(getattr(records, "level", level))
    frame = records.to_frame() if hasattr(records, "to_frame") else pd.DataFrame(records)
    need = [label_key, "estimate", "ci_lower", "ci_upper"]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise DataError(f"interval table: missing column(s) {', '.join(missing)}")
    ext = {key: frame[key].tolist() for key in extra if key in frame.columns}
    return IntervalTable([str(v) for v in frame[label_key]], frame["estimate"].astype(float).tolist(),
                         frame["ci_lower"].astype(float).tolist(),
                         frame["ci_upper"].astype(float).tolist(), ext, {}, measure, level)


def interval_plot(table: IntervalTable, ax=None, *, overall=None, overall_label=None, width="onehalf",
                  font_size=FONT_SIZE, xlim=None, xlabel=None, title=None, label_title="Study",
                  ci_title=None, show_pi=False, pages=False, max_rows=None):
    """Points with CIs, one per row (cumulative and leave-one-out analyses), and an optional
    overall diamond; returns the axes (or, with ``pages=True``, a list of figures)."""
    r_scale = table.measure == "ZCOR"
    n = len(table.labels)
    if not (len(table.estimate) == len(table.ci_lower) == len(table.ci_upper) == n) or n == 0:
        raise DataError("interval plot: labels, estimate, ci_lower and ci_upper need the same, "
                        "non-zero length")
    # extra["ci"], when given, replaces the estimate-and-CI text (e.g. a CI not reported)
    extra_keys = [k for k in table.extra if k != "ci"]
    rows = []
    for i in range(n):
        est, lo, hi = (float(table.estimate[i]), float(table.ci_lower[i]), float(table.ci_upper[i]))
        if not all(np.isfinite([est, lo, hi])):
            raise DataError(f"interval plot: row {i + 1} ({table.labels[i]}) has a missing value")
        cells = {"label": _truncate(_clean(table.labels[i]), 48), "ci": _est_text(est, lo, hi, r_scale)}
        for key in extra_keys:
            value = table.extra[key][i]
            cells[key] = value if isinstance(value, str) else _clean(value)
        if "ci" in table.extra:
            cells["ci"] = str(table.extra["ci"][i])
        rows.append(_Row("point", cells, est=est, lo=lo, hi=hi, keep=i, band=-1))
    ref = None
    if overall is not None:
        ref = float(overall.estimate)
        rows.append(_Row("blank", keep=10**6))
        rows += _summary_rows(overall, r_scale=r_scale, show_pi=show_pi, level=table.level,
                              keep=10**6, label=overall_label or model_name(overall),
                              note=False, weight_text="")
    titles = {"label": label_title, **table.extra_titles}
    if ci_title:
        titles["ci"] = ci_title
    columns = _make_columns(extra_keys + ["ci"], r_scale, table.level, titles)
    for col in columns:  # extra columns of an interval table hold numbers: right-align them
        if col.key in extra_keys:
            col.align = "right"
    xlabel = _xlabel(r_scale) if xlabel is None else xlabel
    axes = _render(rows, columns, ax=ax, width=width, font_size=font_size, r_scale=r_scale,
                   xlim=xlim, xlabel=xlabel, ref_line=ref, title=title, pages=pages,
                   page_height_mm=PAGE_HEIGHT_MM, max_rows=max_rows)
    return [a.figure for a in axes] if pages else axes[0]


def cumulative_forest_plot(cumulative, ax=None, *, overall=None, measure="ZCOR", level=95.0,
                           **kwargs):
    """Cumulative meta-analysis: row i pools the first i studies (in the order given, e.g. by year).

    ``cumulative`` is the sensitivity module's cumulative result: a DataFrame or list of dicts
    with label, estimate, ci_lower, ci_upper (model scale) and optionally k, tau2, i2.
    """
    table = _table_from(cumulative, measure=measure, level=level, extra=("k", "i2"))
    table.labels = [f"+ {lab}" if i else lab for i, lab in enumerate(table.labels)]
    if "k" in table.extra:
        table.extra["k"] = [fmt_int(v) for v in table.extra["k"]]
        table.extra_titles["k"] = "k"
    if "i2" in table.extra:
        table.extra["i2"] = [fmt_pct(v, 0) for v in table.extra["i2"]]
        table.extra_titles["i2"] = "I\u00b2"
    kwargs.setdefault("label_title", "Study added")
    return interval_plot(table, ax, overall=overall, **kwargs)


def leave_one_out_plot(loo, ax=None, *, overall=None, measure="ZCOR", level=95.0, **kwargs):
    """Leave-one-out analysis: row i pools all studies but study i."""
    table = _table_from(loo, measure=measure, level=level, extra=("tau2", "i2"))
    table.labels = [f"Omitting {lab}" for lab in table.labels]
    if "tau2" in table.extra:
        table.extra["tau2"] = [fmt_num(v, 3) for v in table.extra["tau2"]]
        table.extra_titles["tau2"] = "\u03c4\u00b2"
    if "i2" in table.extra:
        table.extra["i2"] = [fmt_pct(v, 0) for v in table.extra["i2"]]
        table.extra_titles["i2"] = "I\u00b2"
    kwargs.setdefault("label_title", "Analysis")
    return interval_plot(table, ax, overall=overall, **kwargs)


# --- funnel plot ---------------------------------------------------------------------------------

def funnel_plot(result, ax=None, *, trimfill=None, contours=True, width="single",
                height_mm=None, font_size=FONT_SIZE, title=None, level=None):
    """Journal-style funnel plot: effect (x; r axis for correlations) against standard error
    (y, 0 at the top), the pseudo confidence region around the model's estimate and, with
    ``contours=True``, the contour-enhanced regions of significance around zero (Peters et al.,
    2008). ``trimfill`` (a ``bias.TrimFillResult``) adds the filled studies as open circles and
    the adjusted estimate as a dashed line. The geometry is ``plots_bias.funnel_data``'s (one
    implementation); this function draws it at print size. Returns the axes.
    """
    import matplotlib
    from matplotlib.patches import Polygon

    from metaalliance.figures.bias_plots import CONTOUR_SHADES, funnel_data

    d = funnel_data(result, trimfill=trimfill, level=level)
    r_scale = _is_r_scale(result, "auto")
    top = d["se_top"]
    with matplotlib.rc_context(journal_rc(font_size)):
        if ax is None:
            w = width_inches(width)
            h = (height_mm / MM_PER_INCH) if height_mm else w * 0.8
            fig = _new_figure(w, h)
            ax = fig.add_axes([0.14, 0.30, 0.82, 0.64 if not title else 0.58])
        xs = np.concatenate([d["yi"], d["filled_yi"], d["pseudo_ci"]["lower"],
                             d["pseudo_ci"]["upper"], [0.0]])
        if contours:
            z = max(c["z"] for c in d["contours"])
            xs = np.concatenate([xs, [-z * top, z * top]])
        pad = 0.04 * float(xs.max() - xs.min() or 1.0)
        lo, hi = float(xs.min()) - pad, float(xs.max()) + pad
        if r_scale:  # the r axis ends at +-R_AXIS_LIMIT; points beyond sit on the edge
            lo = max(lo, -math.atanh(R_AXIS_LIMIT))
            hi = min(hi, math.atanh(R_AXIS_LIMIT))
        if contours:
            p_levels = [c["p"] for c in d["contours"]]
            for reg in d["regions"]:
                i = p_levels.index(reg["p_upper"])
                label = None
                if reg["side"] > 0:
                    upper, lower = fmt_r(reg["p_upper"]), fmt_r(reg["p_lower"])
                    label = f"p < {upper}" if reg["p_lower"] == 0 else f"{lower} < p < {upper}"
                ax.add_patch(Polygon(reg["polygon"], closed=True,
                                     facecolor=CONTOUR_SHADES[min(i, len(CONTOUR_SHADES) - 1)],
                                     edgecolor="none", zorder=0, gid="funnel-contour",
                                     label=label))
        ci = d["pseudo_ci"]
        ax.plot([ci["lower"][1], d["estimate"], ci["upper"][1]], [top, 0, top], color="black",
                lw=0.6, ls=(0, (3, 2)), zorder=1, gid="funnel-pseudo-ci",
                label=f"{d['level']:g}% pseudo CI")
        ax.plot([d["estimate"]] * 2, [0, top], color="black", lw=0.7, zorder=1,
                gid="funnel-estimate", label="model estimate")
        if trimfill is not None and trimfill.k0 > 0:
            ax.plot([d["adjusted_estimate"]] * 2, [0, top], color="black", lw=0.7,
                    ls=(0, (1, 1.5)), zorder=1, gid="funnel-adjusted",
                    label="trim-and-fill estimate")
        # smaller points for many findings; a thin white rim keeps overlapping points apart
        size = 14 if d["yi"].size < 100 else 8
        ax.scatter(np.clip(d["yi"], lo, hi), d["se"], s=size, color="black", edgecolors="white",
                   linewidths=0.3, zorder=3, gid="funnel-points", label="findings", clip_on=False)
        if d["filled_yi"].size:
            ax.scatter(np.clip(d["filled_yi"], lo, hi), d["filled_se"], s=size,
                       facecolors="white", edgecolors="black", lw=0.6, zorder=3,
                       gid="funnel-filled", label="filled (trim and fill)", clip_on=False)
        ax.set_ylim(top, 0)
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: "0" if v == 0 else fmt_r(v)))
        ax.set_ylabel("Standard error")
        panel_pt = ax.get_position().width * ax.figure.get_figwidth() * PT_PER_INCH
        _set_effect_axis(ax, lo, hi, r_scale, panel_pt, font_size, fixed=True)
        ax.set_xlabel(_xlabel(r_scale))
        for side in ("right", "top"):
            ax.spines[side].set_visible(False)
        # the legend sits below the axis label, never on the points
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False,
                  fontsize=font_size - 0.5, handlelength=1.6, columnspacing=1.5,
                  borderaxespad=0.0)
        if title:
            ax.set_title(title, loc="left", fontweight="bold")
    return ax


# --- bubble plot (meta-regression on one continuous moderator) ------------------------------------

def bubble_plot(x, yi, vi, ax=None, *, fit=None, tau2=0.0, measure="ZCOR", xlabel="Moderator",
                width="single", font_size=FONT_SIZE, title=None, level=95.0):
    """Effects against a continuous moderator, circle area proportional to the weight
    1/(vi + tau2); with ``fit`` (intercept, slope[, vcov 2x2]) the regression line and its CI band."""
    import matplotlib

    x = np.asarray(x, dtype=float)
    yi = np.asarray(yi, dtype=float)
    vi = np.asarray(vi, dtype=float)
    if not (x.shape == yi.shape == vi.shape) or x.size == 0:
        raise DataError("bubble plot: x, yi and vi need the same, non-zero length")
    if np.any(~np.isfinite(x)) or np.any(~np.isfinite(yi)) or np.any(vi <= 0):
        raise DataError("bubble plot: x and yi must be finite and vi positive")
    r_scale = measure == "ZCOR"
    w = 1.0 / (vi + float(tau2))
    # circle area proportional to the weight; smaller circles when there are many
    sizes = 4 + 80 * min(1.0, math.sqrt(40.0 / x.size)) * w / w.max()
    with matplotlib.rc_context(journal_rc(font_size)):
        if ax is None:
            wi = width_inches(width)
            fig = _new_figure(wi, wi * 0.75)
            ax = fig.add_axes([0.16, 0.15, 0.80, 0.78 if not title else 0.72])
        ax.scatter(x, yi, s=sizes, facecolors="0.75", edgecolors="black", lw=0.5, zorder=2,
                   gid="bubble-points")
        if fit is not None:
            b0, b1 = float(fit[0]), float(fit[1])
            grid = np.linspace(x.min(), x.max(), 101)
            pred = b0 + b1 * grid
            if len(fit) > 2 and fit[2] is not None:
                v = np.asarray(fit[2], dtype=float)
                se = np.sqrt(v[0, 0] + 2 * grid * v[0, 1] + grid ** 2 * v[1, 1])
                crit = _crit(level)
                ax.fill_between(grid, pred - crit * se, pred + crit * se, color="0.88", lw=0,
                                zorder=1, gid="bubble-band")
            ax.plot(grid, pred, color="black", lw=0.9, zorder=3, gid="bubble-line")
        lo = float(min(yi.min(), 0.0))
        hi = float(yi.max())
        pad = 0.08 * (hi - lo or 1.0)
        panel_pt = ax.get_position().height * ax.figure.get_figheight() * PT_PER_INCH
        _set_effect_axis(ax, lo - pad, hi + pad, r_scale, panel_pt, font_size, fixed=True, axis="y")
        ax.axhline(0, color=_GREY, lw=0.5, zorder=0)
        if np.all(x == np.round(x)):  # years and counts: whole-number ticks, no separators
            from matplotlib.ticker import FormatStrFormatter, MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
            ax.xaxis.set_major_formatter(FormatStrFormatter("%d"))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Correlation r (Fisher z axis)" if r_scale else "Effect size")
        for side in ("right", "top"):
            ax.spines[side].set_visible(False)
        if title:
            ax.set_title(title, loc="left", fontweight="bold")
    return ax


__all__ = [
    "FORMATS", "JOURNAL_WIDTHS_MM", "SORTS", "IntervalTable", "bubble_plot",
    "cumulative_forest_plot", "forest_figures", "forest_plot", "forest_rows", "funnel_plot",
    "heterogeneity_text", "interval_plot", "journal_rc", "leave_one_out_plot", "model_name",
    "save_figure", "width_inches",
]
