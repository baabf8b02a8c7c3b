"""metaalliance: process-outcome meta-analysis of the therapeutic alliance.

A curated dataset of published alliance-outcome findings (``findings.load()``) and a
random-effects engine whose numbers agree with R's metafor (``models``).
Submodules are imported on demand so that ``metaalliance --help`` stays fast.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
