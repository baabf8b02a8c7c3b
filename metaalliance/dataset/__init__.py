"""The curated dataset and every other way data comes in.

``findings`` (YAML + BibTeX -> one tidy frame, validation), ``effectsize`` (reported statistics
-> r -> Fisher z), ``tabular`` (any CSV of effects), ``selection`` (``--where`` filters),
``curate`` (adding findings), ``fileio`` (atomic, locked writes) and the ways data goes out to
other software: ``interop`` (``to_pymare``) and ``rbridge`` (the R/metafor script of
``export --r``). Nothing here fits a model.
"""
