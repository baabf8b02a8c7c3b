"""Journal figures (matplotlib is imported only inside this package).

``plots`` draws forest, funnel, bubble and the sensitivity figures; ``bias_plots`` holds the
funnel's data and contour shades. Number formatting is shared with the report through
``metaalliance.formatting``.
"""
