"""The explorer's Shiny app: ``make_app(dataset)`` -> a Shiny ``App`` (ASGI).

The UI is built from Shiny's own components (its assets ship in the shiny package: no
JavaScript build step). Each browser session gets its own inputs and reactive values; the
dataset is read once at start-up and only read afterwards. Every number and figure comes
from ``explorer.logic``, which calls the package API.
"""

from __future__ import annotations

from metaalliance.explorer import logic

CSS = """
.ma-headline { font-size: 1.6rem; font-weight: 600; margin: 0; white-space: nowrap; }
.ma-estimate { display: flex; flex-wrap: wrap; gap: .25rem 2.5rem; align-items: flex-start; }
.ma-head { min-width: 14rem; }
.ma-side-title { font-weight: 600; margin: 0 0 .25rem 0; }
.ma-forest-wrap { overflow-x: auto; }
.ma-sub { color: #555; font-size: .9rem; }
.ma-summary td { padding: .1rem .75rem .1rem 0; vertical-align: top; }
.ma-summary td:first-child { color: #555; white-space: nowrap; }
.ma-cmd { white-space: pre-wrap; word-break: break-all; background: #f6f6f6;
          padding: .5rem; border-radius: .25rem; font-size: .8rem; margin: .25rem 0 .5rem 0; }
.ma-figure { max-width: 100%; height: auto; }
#forest-img { width: 100%; max-width: 1000px; }
.ma-table { font-size: .85rem; }
.ma-table td, .ma-table th { padding: .2rem .4rem; }
.ma-table td { max-width: 16rem; overflow-wrap: break-word; }
.ma-source { word-break: break-all; }
.ma-scroll { overflow-x: auto; }
.ma-downloads { display: flex; flex-wrap: wrap; gap: .5rem; align-items: end; margin-top: .5rem; }
.ma-downloads .form-group, .ma-downloads .shiny-input-container { margin-bottom: 0; }
.accordion-button { padding: .4rem .75rem; font-size: .9rem; }
.accordion-body { padding: .4rem .75rem; }
.accordion-body .shiny-options-group { font-size: .85rem; }
@media (max-width: 575.98px) {
  #forest-img { width: 720px; max-width: none; }
}
"""


def _count_choices(counts) -> dict:
    return {lv: f"{lv} ({n})" for lv, n in counts}


def _sidebar(ds: logic.Dataset):
    from shiny import ui

    from metaalliance.options import METHODS, TESTS

    panels = []
    for fld, title, counts in ds.tags():
        selected = ds.default_domains() if fld == "outcome_domain" else [lv for lv, _ in counts]
        panels.append(ui.accordion_panel(
            title, ui.input_checkbox_group(f"tag_{fld}", None, _count_choices(counts),
                                           selected=selected),
            value=fld))
    items = [ui.p("Findings: tick the levels to keep", class_="ma-side-title"), ui.accordion(*panels, id="filters", open=False, multiple=True)]
    years = ds.years()
    if years is not None and years[0] < years[1]:
        items.append(ui.input_slider("years", "Publication year", years[0], years[1],
                                     value=list(years), step=1, sep=""))
    models = ds.models()
    items += [
        ui.p("Model", class_="ma-side-title mt-2"),
        ui.input_select("method", "Estimator (tau²)", {m: m for m in METHODS},
                        selected="REML"),
        ui.input_radio_buttons("test", "Test", {t: {"z": "z (normal)",
                                                    "knha": "Knapp-Hartung"}.get(t, t)
                                                for t in TESTS},
                               selected="z", inline=True),
        ui.input_select("model", "Working model", {k: m[0] for k, m in models.items()},
                        selected="independent"),
        ui.panel_conditional("input.model === 'composite_sample'",
                             ui.input_numeric("rho", "rho (within-sample correlation)", 0.5,
                                              min=-0.99, max=0.99, step=0.1)),
    ]
    return ui.sidebar(*items, width=310, open="desktop")


def _downloads():
    from shiny import ui

    return ui.div(
        ui.input_select("width", "Width", {str(w): f"{w} mm" for w in logic.WIDTHS_MM},
                        selected="174", width="8rem"),
        ui.input_select("fmt", "Format", {f: f.upper() for f in logic.DOWNLOAD_FORMATS},
                        selected="pdf", width="7rem"),
        ui.download_button("dl_forest", "Forest"),
        ui.download_button("dl_funnel", "Funnel"),
        ui.download_button("dl_csv", "Selection (CSV)"),
        class_="ma-downloads")


def make_ui(ds: logic.Dataset):
    from shiny import ui

    what = ("the curated dataset" if ds.curated
            else f"{ds.source} ({len(ds.frame)} rows)")
    return ui.page_sidebar(
        _sidebar(ds),
        ui.tags.style(CSS),
        ui.p("Tap \u203a at the top left for the filters and the model.",
             class_="ma-sub d-sm-none mb-0"),
        ui.card(ui.output_ui("estimate")),
        ui.navset_card_tab(
            ui.nav_panel("Forest plot", ui.output_ui("forest"), _downloads(), value="forest"),
            ui.nav_panel("Funnel and bias", ui.output_ui("funnel"), value="funnel"),
            ui.nav_panel("Moderators",
                         ui.input_select("moderator", "Subgroups by",
                                         {f: t for f, t, _ in ds.tags()},
                                         selected="rater" if "rater" in ds.frame.columns
                                         else None),
                         ui.output_ui("moderators"), value="moderators"),
            ui.nav_panel("Leave-one-out", ui.output_ui("loo"), value="loo"),
            ui.nav_panel("Findings", ui.output_ui("findings"), value="findings"),
            ui.nav_panel("Reproduce", ui.output_ui("reproduce"), value="reproduce"),
            id="tabs"),
        title=ui.span("metaalliance explorer",
                      ui.span(f" — {what}", class_="ma-sub")),
        window_title="metaalliance explorer", fillable=False)


def _table(header, rows, cls="table table-sm ma-table"):
    from shiny import ui

    return ui.div(ui.tags.table(
        ui.tags.thead(ui.tags.tr(*[ui.tags.th(h) for h in header])),
        ui.tags.tbody(*[ui.tags.tr(*[ui.tags.td(c) for c in row]) for row in rows]),
        class_=cls), class_="ma-scroll")


def make_server(ds: logic.Dataset):
    from shiny import reactive, render, req, ui

    tags = ds.tags()

    def server(input, output, session):
        @reactive.calc
        def view() -> logic.View:
            chosen = {fld: input[f"tag_{fld}"]() for fld, _t, _c in tags}
            years = input.years() if ds.years() and "years" in input else None
            rho = input.rho() if input.model() == "composite_sample" else 0.5
            if rho is None:
                rho = 0.5
            return logic.view_from_inputs(ds, chosen, years, method=input.method(),
                                          test=input.test(), model=input.model(),
                                          rho=float(rho))

        @reactive.calc
        def selected() -> logic.Selected:
            return logic.select(ds, view())

        @reactive.calc
        def fitted() -> logic.Fitted:
            return logic.fit_view(ds, view(), selected())

        @render.ui
        def estimate():
            f = fitted()
            cmd = logic.command_line(ds, view())
            if f.message:
                return ui.div(ui.div(f.message, class_="alert alert-warning", id="too-few",
                                     role="status"))
            d = f.numbers
            bt = d.get("back_transformed") or d
            rows = logic.summary_rows(ds, f)
            headline = rows[1][1]
            notes = [f"warning: {w}" for w in f.warnings]
            if selected().apart:
                notes.append(f"{selected().apart} adherence/retention/dropout finding(s) are "
                             "kept apart, as on the command line; tick them under Outcome "
                             "domain to include them.")
            return ui.div(
                ui.div(
                    ui.div(ui.p(("r = " if ds.measure == "ZCOR" else "estimate = ") + headline,
                                class_="ma-headline", id="estimate-r",
                                data_value=repr(float(bt["estimate"])),
                                data_z=repr(float(d["estimate"])), data_k=str(d["k"])),
                           ui.p("k = " + rows[0][1] + (" findings" if rows[0][1].isdigit() else "")
                                + ("" if ds.measure != "ZCOR" else "; pooled on Fisher's z"),
                                class_="ma-sub"),
                           class_="ma-head"),
                    ui.tags.table(*[ui.tags.tr(ui.tags.td(a), ui.tags.td(b))
                                    for a, b in rows[2:]], class_="ma-summary"),
                    class_="ma-estimate"),
                *[ui.p(n, class_="ma-sub mb-1") for n in notes],
                ui.p("The same numbers from the command line:", class_="ma-sub mb-0 mt-1"),
                ui.pre(cmd, class_="ma-cmd", id="command"),
            )

        @render.ui
        def forest():
            f = fitted()
            if f.message:
                return ui.p(f.message, class_="text-muted")
            fig = logic.forest_figure(ds, f, 174.0, preview=True)
            note = (f"k = {f.fit.k}: the preview shows the pooled rows only; the download "
                    "has every finding." if f.fit.k > logic.PREVIEW_MAX_ROWS else "")
            return ui.div(ui.div(ui.img(src=logic.svg_data_uri(fig), id="forest-img",
                                        class_="ma-figure",
                                        alt="Forest plot of the selection"),
                                 class_="ma-forest-wrap"),
                          ui.p(note, class_="ma-sub") if note else None)

        @render.ui
        def funnel():
            sel = selected()
            bv = logic.bias_view(ds, view(), sel)
            if bv.fit is None:
                return ui.p(" ".join(bv.messages), class_="text-muted")
            fig = logic.funnel_figure(ds, bv, 84.0)
            rows = logic.bias_rows(ds, bv)
            return ui.div(
                ui.layout_columns(
                    ui.img(src=logic.svg_data_uri(fig), id="funnel-img",
                           class_="ma-figure", alt="Funnel plot of the selection"),
                    ui.div(ui.tags.table(*[ui.tags.tr(ui.tags.td(a), ui.tags.td(b))
                                           for a, b in rows], class_="ma-summary"),
                           *[ui.p(m, class_="ma-sub") for m in bv.messages],
                           ui.p("Findings as independent, as `metaalliance bias`:",
                                class_="ma-sub mb-0 mt-2"),
                           ui.pre(logic.command_line(ds, view(), "bias"), class_="ma-cmd")),
                    col_widths=(6, 6)))

        @render.ui
        def moderators():
            by = input.moderator()
            req(by)
            sel = selected()
            try:
                rows, q = logic.moderator_table(ds, view(), sel, by)
            except logic.MetaAllianceError as exc:
                return ui.p(str(exc), class_="text-muted")
            cmd = logic.command_line(ds, logic.dataclasses.replace(view(), model="independent"),
                                     "pool", extra=("--by", by))
            return ui.div(_table([by, "k", "r [95% CI]" if ds.measure == "ZCOR" else
                                  "estimate [95% CI]", "tau²"], rows),
                          ui.p(q), ui.p("Findings as independent, a tau² per subgroup:",
                                        class_="ma-sub mb-0"),
                          ui.pre(cmd, class_="ma-cmd"))

        @render.ui
        def loo():
            try:
                rows = logic.leave_one_out_rows(ds, view(), selected())
            except logic.MetaAllianceError as exc:
                return ui.p(str(exc), class_="text-muted")
            return ui.div(_table(["left out", "estimate [95% CI]", "tau²", "I²"], rows),
                          ui.p("Findings as independent, as `metaalliance sensitivity`:",
                               class_="ma-sub mb-0"),
                          ui.pre(logic.command_line(ds, view(), "sensitivity"),
                                 class_="ma-cmd"))

        @render.ui
        def findings():
            sel = selected()
            df = sel.frame
            if df.empty:
                return ui.p("No findings in this selection.", class_="text-muted")
            cols = [(c, t) for c, t in logic.TABLE_COLUMNS if c in df.columns]
            if not ds.curated:
                cols = [(c, c) for c in df.columns if c not in ("yi", "vi") or
                        c in ds.argv]
            body = []
            for rec in df.to_dict("records"):
                cells = []
                for c, _t in cols:
                    v = rec.get(c)
                    if c == "source":
                        url = logic.source_url(v)
                        cells.append(ui.tags.a(str(v), href=url, target="_blank",
                                               rel="noopener", class_="ma-source")
                                     if url else str(v))
                    elif c == "r" and isinstance(v, float):
                        cells.append(f"{v:.3f}")
                    elif isinstance(v, float) and v == v and v.is_integer():
                        cells.append(str(int(v)))
                    elif v is None or (isinstance(v, float) and v != v):
                        cells.append("")
                    else:
                        cells.append(str(v))
                body.append(cells)
            return ui.div(ui.p(f"{len(df)} findings", class_="ma-sub"),
                          _table([t for _c, t in cols], body))

        @render.ui
        def reproduce():
            v = view()
            lines = [("Pooled estimate", logic.command_line(ds, v)),
                     ("Bias checks", logic.command_line(ds, v, "bias")),
                     ("Sensitivity", logic.command_line(ds, v, "sensitivity"))]
            w = input.width()
            fmt = input.fmt()
            lines.append(("Forest plot", logic.command_line(
                ds, v, "forest", json=False, extra=("--out", f"forest.{fmt}",
                                                    "--width-mm", w))))
            lines.append(("Funnel plot", logic.command_line(
                ds, v, "funnel", json=False, extra=("--out", f"funnel.{fmt}",
                                                    "--width-mm", w, "--trimfill"))))
            out = []
            for title, cmd in lines:
                out += [ui.h6(title), ui.pre(cmd, class_="ma-cmd")]
            return ui.div(*out)

        def _fname(stem):
            return f"{stem}-{input.width()}mm.{input.fmt()}"

        @render.download_button(filename=lambda: _fname("forest"))
        def dl_forest():
            f = fitted()
            req(f.fit is not None)
            yield logic.forest_download(ds, f, input.fmt(), float(input.width()))

        @render.download_button(filename=lambda: _fname("funnel"))
        def dl_funnel():
            bv = logic.bias_view(ds, view(), selected())
            req(bv.fit is not None)
            yield logic.figure_bytes(logic.funnel_figure(ds, bv, float(input.width())),
                                     input.fmt())

        @render.download_button(filename="selection.csv")
        def dl_csv():
            yield logic.selection_csv(selected())

    return server


def make_app(ds: logic.Dataset):
    """The Shiny app over one dataset."""
    from shiny import App

    return App(make_ui(ds), make_server(ds))
