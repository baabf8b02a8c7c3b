"""The one place where allowed option values are declared.

Every function that takes a method, a test or a vocabulary level checks it here
(``check_option``), so an unknown value gives the same clear message everywhere.
``METAFOR_NAMES`` maps our option names to metafor's, as PyMARE does.
"""

from __future__ import annotations

from metaalliance.errors import OptionError

# --- model options -------------------------------------------------------------------------

#: tau^2 estimators; "EE" is the equal-effects (common-effect) model, tau^2 = 0.
METHODS = ("EE", "DL", "HE", "HS", "SJ", "ML", "REML", "EB", "PM")
DEFAULT_METHOD = "REML"

#: tests and confidence intervals for fixed effects: normal ("z") or Knapp-Hartung ("knha").
TESTS = ("z", "knha")
DEFAULT_TEST = "z"

#: how iterative tau^2 estimators (ML, REML, EB, PM) and the Q-profile CI stop:
#: "metafor" reproduces metafor 3.8's default control step for step (Fisher scoring until
#: |change| <= 1e-5, at most 100 iterations; uniroot(tol = eps^0.25) for PM and confint), so
#: numbers equal a plain rma()/confint() call; "optimum" iterates to the exact optimum
#: (metafor with control = list(threshold = 1e-10, tol = 1e-12) agrees with it)
CONTROLS = ("metafor", "optimum")
DEFAULT_CONTROL = "metafor"

#: how tau^2 is handled in subgroup analyses
TAU2_MODELS = ("separate", "pooled")

#: trim-and-fill estimators and sides
TRIMFILL_ESTIMATORS = ("L0", "R0")
SIDES = ("left", "right")

#: selection models (metafor's selmodel types offered) and the direction of one-sided p-values
SELECTION_TYPES = ("stepfun", "beta", "halfnorm", "negexp", "logistic", "power")
ALTERNATIVES = ("greater", "less", "two.sided")
#: working models for dependent findings (pool --cluster): three-level (rma.mv) or CHE
WORKING_MODELS = ("three-level", "che")
#: robumeta's RVE working models: correlated or hierarchical effects
MODELWEIGHTS = ("CORR", "HIER")

#: our option name -> metafor's argument value
METAFOR_NAMES = {
    "method": {m: m for m in METHODS} | {"EE": "EE"},
    "test": {"z": "z", "knha": "knha"},
    "tau2_model": {"separate": "rma() per subgroup", "pooled": "rma(mods = ~ factor(group))"},
}

# --- findings vocabularies -------------------------------------------------------------------
# Each level has a one-line meaning; data/README.md (the codebook) repeats them with the coding
# rules. A test checks that the codebook and this table agree.

VOCABULARIES: dict[str, dict[str, str]] = {
    "population": {
        "adult": "adults (18+) treated as individuals or in groups",
        "youth": "children and adolescents (< 18) as the identified patient",
        "couple": "couples in conjoint treatment",
        "family": "families in conjoint treatment",
        "unspecified": "the text read does not say (say what is known in the note)",
    },
    "diagnosis": {
        "depression": "depressive disorders, incl. chronic depression and MDE",
        "anxiety": "anxiety disorders (GAD, panic, social anxiety, mixed anxiety)",
        "ptsd": "posttraumatic stress disorder",
        "ocd": "obsessive-compulsive disorder",
        "substance_use": "alcohol or drug use disorders",
        "personality_disorder": "personality disorders, incl. borderline pathology",
        "psychosis": "schizophrenia spectrum and first-episode psychosis",
        "eating_disorder": "anorexia, bulimia, binge eating",
        "behavior_problems": "youth conduct, behaviour and parenting problems",
        "medical": "a somatic condition (e.g. chronic tinnitus, chronic medical illness)",
        "chronic_pain": "chronic (> 3 months) musculoskeletal or low back pain",
        "mixed": "a heterogeneous clinical sample with several diagnoses",
        "unspecified": "the text read names no diagnosis",
    },
    "setting": {
        "outpatient": "outpatient clinic or private practice",
        "inpatient": "inpatient ward",
        "residential": "residential or day-hospital programme",
        "community_psychiatry": "community mental health / psychiatric services",
        "counselling_centre": "university or community counselling centre",
        "internet": "internet-delivered or videoconference treatment",
        "school": "school-based treatment",
        "home": "home-based treatment",
        "physical_rehabilitation": "physical or occupational rehabilitation (physiotherapy, work hardening, pain clinic)",
        "other": "another setting (say which in the note)",
        "unspecified": "the text read does not say",
    },
    "modality": {
        "individual": "one therapist, one patient",
        "group": "group therapy",
        "couple": "conjoint couple therapy",
        "family": "conjoint family therapy or family-involved treatment",
        "mixed": "several modalities pooled in the finding",
        "unspecified": "the text read does not say",
    },
    "treatment": {
        "cbt": "cognitive, behavioural and CBT-family treatments (incl. CBASP, exposure)",
        "psychodynamic": "psychodynamic / psychoanalytic treatments",
        "supportive": "supportive or client-centred psychotherapy",
        "interpersonal": "interpersonal psychotherapy",
        "dbt": "dialectical behaviour therapy",
        "motivational": "motivational interviewing / enhancement",
        "family_systemic": "family or systemic therapy",
        "medication": "pharmacotherapy or medication management",
        "tau": "treatment as usual / routine care",
        "physical_therapy": "exercise-based physical or occupational therapy",
        "mixed": "several treatments pooled in the finding",
        "other": "another treatment (say which in treatment_detail)",
        "unspecified": "the text read does not say",
    },
    "design": {
        "rct": "randomised controlled trial (alliance studied within it)",
        "naturalistic": "naturalistic or observational study",
        "other": "another design (say which in the note)",
        "unspecified": "the text read does not say",
    },
    "instrument": {
        "WAI": "Working Alliance Inventory (full, 36 items)",
        "WAI-S": "Working Alliance Inventory, short form (12 items)",
        "WAI-SR": "Working Alliance Inventory, short revised",
        "WAI-O": "Working Alliance Inventory, observer version (any length)",
        "WAI-I": "Working Alliance Inventory for guided internet interventions",
        "WAI-other": "another WAI version, or the text does not say which",
        "HAq": "Helping Alliance Questionnaire (HAq-I)",
        "HAq-II": "Helping Alliance Questionnaire II",
        "HA-counting": "Helping Alliance counting-signs / rating method (Luborsky)",
        "CALPAS": "California Psychotherapy Alliance Scales",
        "VTAS": "Vanderbilt Therapeutic Alliance Scale",
        "BLRI": "Barrett-Lennard Relationship Inventory",
        "STAR": "Scale to Assess the Therapeutic Relationship",
        "SRS": "Session Rating Scale",
        "SOFTA": "System for Observing Family Therapy Alliances",
        "IAT-P": "alliance instrument named IAT-P in the text read (Venezuelan OQ-45.2 study); the expansion of the name was not read",
        "4PAS": "4-Point ordinal Alliance Scale",
        "other": "another or unnamed instrument (say which in instrument_detail)",
    },
    "rater": {
        "client": "the patient (or youth) rates",
        "therapist": "the therapist rates",
        "observer": "trained observers rate recordings or transcripts",
        "parent": "a parent or caregiver rates",
        "combined": "ratings of several perspectives combined",
        "unspecified": "the text read does not say",
    },
    "timing": {
        "early": "first sessions (about the first third of treatment)",
        "mid": "middle of treatment",
        "late": "late in treatment or at its end",
        "averaged": "averaged over several assessments",
        "unspecified": "the text read does not say",
    },
    "outcome_domain": {
        "symptoms": "symptom measures",
        "functioning": "functioning, quality of life, social adjustment, physical function",
        "pain": "pain severity or pain interference ratings",
        "global": "global or general outcome ratings",
        "adherence": "treatment adherence (homework, medication, attendance as adherence)",
        "retention": "retention in treatment (staying); dropout coded as retention with sign aligned",
        "dropout": "dropout, kept apart when the paper reports it as dropout",
        "substance_use": "substance use outcomes",
        "other": "another outcome (say which in outcome.measure)",
    },
    "effect_type": {
        "zero_order": "a bivariate association",
        "partial": "a partial association (one covariate set partialled out, e.g. baseline)",
        "adjusted": "an effect from a model with covariates",
    },
    "conversion": {
        "exact": "the reported statistic becomes r by an exact formula",
        "approximate": "the conversion needs an assumption (say which in the note)",
    },
}

#: reported statistic types, and the extra fields each needs to become r
STATISTICS: dict[str, tuple[str, ...]] = {
    "r": (),
    "partial_r": (),
    "spearman_rho": (),
    "beta": (),          # standardised coefficient of a single predictor, taken as r
    "t": ("df",),
    "F": ("df", "sign"),  # F(1, df): unsigned, the sign comes from the text
    "chi2": ("sign",),    # chi2(1) with the finding's n: unsigned
    "d": ("n1", "n2"),
    "z": (),             # a z statistic with the finding's n: r = z / sqrt(n), approximate
    "or": ("n1", "n2"),  # odds ratio, logit method: approximate
}

#: outcome domains analysed apart from symptom outcomes by default
SEPARATE_DOMAINS = ("adherence", "retention", "dropout")

#: the range of numbers the engine accepts. Inside it the float64 sums the estimators form
#: (w = 1 / vi, w^2, w * yi^2, tau^2 up to ~yi^2) neither overflow nor underflow to 0 for
#: millions of studies; outside it they do (vi = 5e-324 gives w = inf, |yi| = 1e308 gives
#: yi^2 = inf) and the numbers would be NaN. No real effect size or variance comes near.
YI_MAX = 1e50
VI_MIN = 1e-100
VI_MAX = 1e100


def check_option(name: str, value, allowed) -> None:
    """Raise OptionError naming the option, the bad value and the allowed values."""
    if value not in allowed:
        raise OptionError(
            f"{name}: {value!r} is not one of {', '.join(map(str, allowed))}"
        )
