"""The curated dataset and every other way data comes in.

``findings`` (YAML + BibTeX -> one tidy frame, validation), ``effectsize`` (reported statistics
-> r -> Fisher z), ``tabular`` (any CSV of effects), ``selection`` (``--where`` filters),
``curate`` (adding findings) and ``fileio`` (atomic, locked writes). Nothing here fits a model.
"""
