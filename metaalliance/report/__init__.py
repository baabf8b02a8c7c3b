"""The analysis report (``metaalliance report``, the main job of ``make analyze``).

The HTML and Markdown are rendered from the Jinja2 templates in ``templates/`` (``render``).

``build`` runs the analyses named in analysis.toml and writes the tables, figures, the HTML and
Markdown report and the manifest. The names below are the report's public surface.
"""

from metaalliance.report.build import (DEFAULT_CONFIG, Analysis, analyse, check_out_dir,  # noqa: F401
                                       figures, html_report, load_config, markdown_report, run,
                                       short_citation, summary_paragraph, tables)
