"""The shared style of the journal figures: presets (widths, fonts, sizes), matplotlib rc,
new figures, ``save_figure`` (every page written or none) and text measurement.

matplotlib is imported inside the functions only.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

from metaalliance.errors import DataError, OptionError
from metaalliance.options import check_option


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
