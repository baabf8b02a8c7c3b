"""Journal figures (matplotlib is imported only inside this package, inside functions).

``style`` holds the presets, matplotlib rc, fonts, widths and ``save_figure``; ``rows`` the row
model, layout and effect axis shared by forest-like plots; ``forest``, ``intervals`` (cumulative,
leave-one-out, published syntheses), ``funnel`` and ``bubble`` one figure family each;
``bias_plots`` the funnel's data and contour shades, GOSH and Baujat plots. ``plots`` is a facade
re-exporting the public names (``from metaalliance.figures import plots; plots.forest_plot``).
Number formatting is shared with the report through ``metaalliance.formatting``.
"""
