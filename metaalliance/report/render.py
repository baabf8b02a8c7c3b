"""The report's Jinja2 environment: templates live in ``report/templates/`` (package data).

HTML templates are autoescaped (every value is escaped unless it is ``Markup`` made by another
template); the Markdown templates are not escaped. ``StrictUndefined``: a name missing from the
context is an error, never an empty string in the report.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=2)
def environment(html: bool):
    """The Jinja2 environment for HTML (autoescape on) or Markdown (autoescape off)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("metaalliance.report", "templates"),
                             autoescape=html, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["md_cell"] = lambda cell: str(cell).replace("|", "\\|")
    return env


def render(template: str, /, **context) -> str:
    """Render ``templates/<template>``; ``*.html.j2`` autoescaped, ``*.md.j2`` not."""
    return environment(template.endswith(".html.j2")).get_template(template).render(**context)


def markup(html: str):
    """Already-rendered HTML (a table from table.html.j2) to be placed unescaped."""
    from markupsafe import Markup

    return Markup(html)
