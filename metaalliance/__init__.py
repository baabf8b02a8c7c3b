"""metaalliance: process-outcome meta-analysis of the therapeutic alliance.

A curated dataset of published alliance-outcome findings and a random-effects engine whose
numbers agree with R's metafor. The public API is the list below (``__all__``); each name is
imported from its subpackage on first use, so ``import metaalliance`` and
``metaalliance --help`` stay fast. docs/architecture.md maps the subpackages.

>>> import metaalliance as ma
>>> fit = ma.random_effects([0.1, 0.3, 0.2, 0.4], [0.01, 0.02, 0.015, 0.03], method="DL")
>>> round(fit.estimate, 4)
0.2067
"""

__version__ = "0.1.0"

#: public name -> the module that defines it (the one place the public API is declared)
_API = {
    # the curated dataset
    "load": "metaalliance.dataset.findings",
    "validate": "metaalliance.dataset.findings",
    "read_effects": "metaalliance.dataset.tabular",
    "convert": "metaalliance.dataset.effectsize",
    "r_to_z": "metaalliance.dataset.effectsize",
    "z_to_r": "metaalliance.dataset.effectsize",
    "import_sheet": "metaalliance.dataset.intake",
    "export_sheet": "metaalliance.dataset.intake_write",
    "to_pymare": "metaalliance.dataset.interop",
    # the engine
    "random_effects": "metaalliance.engine.models",
    "meta_regression": "metaalliance.engine.models",
    "meta_regression_matrix": "metaalliance.engine.models",
    "subgroups": "metaalliance.engine.models",
    "permutation_test": "metaalliance.engine.permutation",
    "permutation_ci": "metaalliance.engine.permci",
    "three_level": "metaalliance.engine.multilevel",
    "robust": "metaalliance.engine.cluster_robust",
    "aggregate": "metaalliance.engine.aggregation",
    "sigma2_profile_ci": "metaalliance.engine.multilevel_ci",
    "che": "metaalliance.engine.che",
    "robu": "metaalliance.engine.rve",
    "robu_sensitivity": "metaalliance.engine.rve",
    "design_matrix": "metaalliance.engine.formulas",
    # analyses
    "egger_test": "metaalliance.analyses.bias",
    "rank_test": "metaalliance.analyses.bias",
    "trim_and_fill": "metaalliance.analyses.bias",
    "pet_peese": "metaalliance.analyses.bias",
    "fail_safe_n": "metaalliance.analyses.bias",
    "selection_model": "metaalliance.analyses.selection",
    "leave_one_out": "metaalliance.analyses.sensitivity",
    "influence": "metaalliance.analyses.sensitivity",
    "baujat": "metaalliance.analyses.sensitivity",
    "cumulative": "metaalliance.analyses.sensitivity",
    "gosh": "metaalliance.analyses.sensitivity",
    "enumerate_specifications": "metaalliance.analyses.multiverse",
    "fit_specifications": "metaalliance.analyses.multiverse",
    # figures
    "specification_curve": "metaalliance.figures.specification_curve",
    "forest_plot": "metaalliance.figures.forest",
    "funnel_plot": "metaalliance.figures.funnel",
    "save_figure": "metaalliance.figures.style",
    "selection_plot": "metaalliance.figures.selection_plot",
}

__all__ = ["__version__", *_API]


def __getattr__(name):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'metaalliance' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
