"""Seeded SIMULATED data for the benchmarks (never real studies).

``simulate(k, seed)`` draws ``k`` correlations the way alliance-outcome findings look: sample
sizes 20..400, three categorical moderators (instrument, rater, modality), a publication year,
and a study identifier (about three findings per study, for the three-level model). True
effects on Fisher's z: 0.25 plus moderator effects plus a study effect (sd 0.08) and a
finding effect (sd 0.10); observed r = tanh(z_true + N(0, 1 / (n - 3))).
"""

from __future__ import annotations

import numpy as np

INSTRUMENTS = ("CALPAS", "HAq", "VTAS", "WAI")
RATERS = ("client", "observer", "therapist")
MODALITIES = ("CBT", "other", "psychodynamic")

#: the label every file written from these data carries
LABEL = "SIMULATED data (benchmarks/data.py), not real studies"


def simulate(k: int = 300, seed: int = 20240606, with_moderators: bool = True) -> dict:
    """A dict of numpy arrays: r, n, yi (= atanh r), vi (= 1 / (n - 3)), and when
    ``with_moderators`` instrument, rater, modality (str), year (int), study (str)."""
    rng = np.random.default_rng(seed)
    n = rng.integers(20, 401, size=k)
    n_studies = max(1, k // 3)
    study = rng.integers(0, n_studies, size=k)
    # every study id 0..n_studies-1 used at least once when k allows it
    study[:min(k, n_studies)] = np.arange(min(k, n_studies))
    u = rng.normal(0.0, 0.08, size=n_studies)[study]
    z = 0.25 + u + rng.normal(0.0, 0.10, size=k)
    out = {}
    if with_moderators:
        ins = rng.integers(0, len(INSTRUMENTS), size=k)
        rat = rng.integers(0, len(RATERS), size=k)
        mod = rng.integers(0, len(MODALITIES), size=k)
        year = rng.integers(1985, 2024, size=k)
        z = (z + np.array([0.0, -0.03, 0.02, 0.04])[ins] + np.array([0.0, 0.05, -0.04])[rat]
             + np.array([0.0, 0.02, -0.02])[mod] + 0.002 * (year - 2005))
        out.update(instrument=np.array(INSTRUMENTS)[ins], rater=np.array(RATERS)[rat],
                   modality=np.array(MODALITIES)[mod], year=year)
    vi = 1.0 / (n - 3)
    r = np.tanh(z + rng.normal(0.0, np.sqrt(vi)))
    out.update(r=r, n=n, yi=np.arctanh(r), vi=vi, study=np.array([f"s{i:05d}" for i in study]))
    return out
