"""Analyses built on the engine: publication bias (``bias``) and sensitivity (``sensitivity``).

A new analysis (selection models, a multiverse) is a module here; it takes arrays or a frame and
returns frozen results, and leaves files and figures to ``commands`` and ``figures``.
"""
