"""The report's options: analysis.toml merged over DEFAULT_CONFIG and checked (``load_config``).

Every option is declared here with its default; allowed values come from metaalliance.options.
"""

from __future__ import annotations

#: every option of analysis.toml with its default; unknown keys are refused
DEFAULT_CONFIG: dict = {
    "report": {
        "title": "Therapeutic alliance and outcome: meta-analysis of the curated findings",
        "formats": ["pdf", "png"],
        "dpi": 300,
        "width": "double",
        "sort": "estimate",
        "columns": ["instrument", "rater", "n", "weight", "ci"],
    },
    "data": {
        "findings": None,          # None: the shipped data/findings
        "bib": None,               # None: the shipped references.bib
        "where": {},               # field -> list of levels kept
        "published": "data/published_syntheses.csv",
    },
    "model": {
        "method": "REML",
        "test": "z",
        "level": 95.0,
        "cluster": "sample",
        "control": "metafor",      # options.CONTROLS: the univariate models' tau^2 iterations
    },
    "outcomes": {
        "separate": None,          # None: options.SEPARATE_DOMAINS
    },
    "moderators": {
        "fields": ["population", "diagnosis", "setting", "modality", "treatment", "design",
                   "instrument", "rater", "timing", "outcome_domain", "effect_type"],
        "exclude_levels": ["unspecified"],
        "min_k": 3,
        "min_studies": 2,
        "min_levels": 2,
        "regression": ["year"],
        "min_k_regression": 10,
    },
    "sensitivity": {
        "rho": 0.5,
        "cumulative_order": "year",
    },
    "bias": {
        "estimator": "L0",
        "alpha": 0.05,
    },
    "comparison": [],
}


def _merge(defaults: dict, given: dict, where: str) -> dict:
    from metaalliance.errors import OptionError

    out = {}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise OptionError(f"{where}: unknown option(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(defaults)}")
    for key, value in defaults.items():
        if key in given:
            if isinstance(value, dict) and key != "where":
                if not isinstance(given[key], dict):
                    raise OptionError(f"{where}: [{key}] must be a table")
                out[key] = _merge(value, given[key], f"{where} [{key}]")
            else:
                out[key] = given[key]
        else:
            out[key] = value
    return out


def load_config(path=None) -> dict:
    """analysis.toml merged over DEFAULT_CONFIG; every option is checked here."""
    import tomllib
    from pathlib import Path

    from metaalliance.errors import OptionError
    from metaalliance.options import CONTROLS, SEPARATE_DOMAINS, TESTS, TRIMFILL_ESTIMATORS, check_option

    given = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise OptionError(f"--config {path}: file not found")
        try:
            given = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise OptionError(f"{path}: not valid TOML: {exc}") from None
    name = str(path) if path is not None else "config"
    cfg = _merge(DEFAULT_CONFIG, given, name)
    m = cfg["model"]
    check_option("model.method", m["method"], ("REML", "ML"))
    check_option("model.test", m["test"], TESTS)
    check_option("model.control", m["control"], CONTROLS)
    if not 50 <= float(m["level"]) < 100:
        raise OptionError(f"{name}: model.level must lie in [50, 100), got {m['level']}")
    for fmt in cfg["report"]["formats"]:
        check_option("report.formats", fmt, ("pdf", "png", "svg", "eps", "tiff"))
    check_option("report.sort", cfg["report"]["sort"], ("estimate", "year", "label", "none"))
    check_option("bias.estimator", cfg["bias"]["estimator"], TRIMFILL_ESTIMATORS)
    if cfg["outcomes"]["separate"] is None:
        cfg["outcomes"]["separate"] = list(SEPARATE_DOMAINS)
    where = cfg["data"]["where"]
    if not isinstance(where, dict):
        raise OptionError(f"{name}: data.where must be a table of field = [levels]")
    cfg["data"]["where"] = {k: [str(x) for x in (v if isinstance(v, list) else [v])]
                            for k, v in where.items()}
    for i, comp in enumerate(cfg["comparison"]):
        if not isinstance(comp, dict) or "key" not in comp:
            raise OptionError(f"{name}: [[comparison]] entry {i + 1} needs a key")
        extra = sorted(set(comp) - {"key", "where", "label"})
        if extra:
            raise OptionError(f"{name}: [[comparison]] {comp['key']}: unknown option(s) "
                              f"{', '.join(extra)}; allowed: key, where, label")
    if path is not None:
        cfg["_path"] = str(path)
    return cfg
