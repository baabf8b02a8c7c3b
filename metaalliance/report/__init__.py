"""The analysis report (``metaalliance report``, the main job of ``make analyze``).

``build.run`` reads the findings, runs the analyses named in analysis.toml (``analysis``), and
writes the tables (``apa_tables``), figures (``drawing``), the HTML and Markdown report
(``render``: Jinja2 templates in ``templates/``) and the manifest. Numbers are rounded only in
the APA text (``metaalliance.formatting``). The names below are the report's public surface.
"""

from metaalliance.report.analysis import Analysis, analyse  # noqa: F401
from metaalliance.report.apa_tables import tables  # noqa: F401
from metaalliance.report.build import check_out_dir, run  # noqa: F401
from metaalliance.report.config import DEFAULT_CONFIG, load_config  # noqa: F401
from metaalliance.report.drawing import figures  # noqa: F401
from metaalliance.report.paragraph import short_citation, summary_paragraph  # noqa: F401
from metaalliance.report.render import html_report, markdown_report  # noqa: F401
