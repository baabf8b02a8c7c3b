"""The report's APA text: the results paragraph (``summary_paragraph``) and in-text citations."""

from __future__ import annotations

from metaalliance.formatting import fmt_ci, fmt_int, fmt_num, fmt_p, fmt_pct, fmt_r
from metaalliance.report.analysis import Analysis, participants


def _r_ci(fit) -> str:
    import math

    return (f"r = {fmt_r(math.tanh(fit.estimate))}, {fit.level:g}% CI "
            f"{fmt_ci(math.tanh(fit.ci_lower), math.tanh(fit.ci_upper))}")


def _count_word(n: int) -> str:
    """APA: numbers below 10 in words."""
    words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    return words[n] if 0 <= n < 10 else fmt_int(n)


def summary_paragraph(a: Analysis) -> str:
    """One APA-style paragraph of results (every number rounded here, from the fits)."""
    import math

    cluster = a.config["model"]["cluster"]
    d = a.data_all
    parts = [f"The curated dataset used here holds {len(d)} findings from "
             f"{d['citekey'].nunique()} studies ({d[cluster].nunique()} independent samples, "
             f"N = {fmt_int(participants(d, cluster))} patients)."]
    if not a.main.ok:
        parts.append(f"The main model could not be fitted: {a.main.note}.")
        return " ".join(parts)
    f = a.main.result
    stat = "z" if f.test == "z" else f"t({fmt_int(f.df)})"
    parts.append(
        f"For symptom-type outcomes (k = {f.k} findings from {f.n_clusters} samples, N = "
        f"{fmt_int(participants(a.data_main, cluster))}), a three-level random-effects model "
        f"(REML; findings nested in samples) estimated the alliance-outcome correlation at "
        f"{_r_ci(f)}, {stat} = {fmt_num(f.stat)}, {fmt_p(f.pvalue)}; the {f.level:g}% prediction "
        f"interval ran from {fmt_r(math.tanh(f.pi_lower))} to {fmt_r(math.tanh(f.pi_upper))}.")
    het = "significant" if f.q_pvalue < 0.05 else "not significant"
    parts.append(f"Heterogeneity was {het}, Q({f.q_df}) = {fmt_num(f.q)}, {fmt_p(f.q_pvalue)}, "
                 f"I\u00b2 = {fmt_pct(f.i2, 0)} (\u03c3\u00b2 between samples = "
                 f"{fmt_num(f.sigma2[0], 3)}, within = {fmt_num(f.sigma2[1], 3)}).")
    apart = [s for s in a.separate if s.ok]
    if apart:
        parts.append("Analysed apart, " + "; ".join(
            f"{s.name} findings gave {_r_ci(s.result)} (k = {s.result.k})" for s in apart) + ".")
    if a.moderators:
        def test(m):
            q = m.subgroups
            stat = (f"F({q.q_between_df}, {q.q_between_df2})" if q.q_between_df2 is not None
                    else f"Q\u2098({q.q_between_df})")
            return (f"{m.field.replace('_', ' ')}, {stat} = {fmt_num(q.q_between)}, "
                    f"{fmt_p(q.q_between_pvalue)}")

        sig = [m for m in a.moderators if m.subgroups.q_between_pvalue < 0.05]
        rest = [m for m in a.moderators if m not in sig]
        if sig:
            text = (f"Of the {_count_word(len(a.moderators))} moderators tested, the estimates "
                    f"differed between "
                    f"levels of {'; '.join(test(m) for m in sig)}")
            if rest:
                text += f", but not of {'; '.join(test(m) for m in rest)}"
        else:
            text = (f"None of the {_count_word(len(a.moderators))} moderators tested showed "
                    "differences "
                    f"between its levels ({'; '.join(test(m) for m in rest)})")
        parts.append(text + ".")
    if a.skipped:
        n = len(a.skipped)
        parts.append(f"{_count_word(n).capitalize()} tagged moderator{'s' if n != 1 else ''} "
                     f"had too few findings per level to be tested "
                     f"({', '.join(fld.replace('_', ' ') for fld, _ in a.skipped)}).")
    for step in a.regressions:
        if step.ok:
            c = step.result.coefficients[1]
            parts.append(f"In a three-level meta-regression on {c.name}, the slope was b = "
                         f"{fmt_num(c.estimate, 4)} per unit on the z scale, {step.result.level:g}% CI "
                         f"{fmt_ci(c.ci_lower, c.ci_upper, 4, r=False)}, {fmt_p(c.pvalue)}.")
    if a.bias.ok:
        b = a.bias.result
        bits = []
        if b.egger is not None:
            e = b.egger
            stat = "z" if e.df is None else f"t({e.df})"
            verdict = "indicated" if e.pvalue < 0.10 else "did not indicate"
            bits.append(f"Egger's test {verdict} funnel asymmetry, {stat} = {fmt_num(e.stat)}, "
                        f"{fmt_p(e.pvalue)}")
        if b.trimfill is not None:
            t = b.trimfill
            if t.k0 > 0:
                bits.append(f"trim and fill imputed {_count_word(t.k0)} "
                            f"sample{'s' if t.k0 != 1 else ''} on the {t.side}, giving an "
                            f"adjusted {_r_ci(t.fit)}")
            else:
                bits.append("trim and fill imputed no samples")
        if bits:
            parts.append(f"With one composite effect per sample (k = {b.k}), "
                         + "; ".join(bits) + ".")
    pubs = [c for c in a.comparison if c["r_published"] is not None]
    if pubs:
        lo = min(c["r_published"] for c in pubs)
        hi = max(c["r_published"] for c in pubs)
        r = math.tanh(f.estimate)
        where = ("within" if lo <= r <= hi else "below" if r < lo else "above")
        parts.append(f"The pooled estimate lies {where} the range of the published syntheses "
                     f"used as reference points (r = {fmt_r(lo)} to {fmt_r(hi)}; they are not "
                     "pooled with these findings).")
    return " ".join(parts)


def short_citation(authors: str, year) -> str:
    """APA in-text citation from 'Surname, Surname, ...': 'A (2018)', 'A & B (2018)',
    'A et al. (2018)'."""
    names = [a.strip() for a in str(authors).split(",") if a.strip()]
    if not names:
        return f"({year})"
    if "et al" in names[0]:
        return f"{names[0].split(' et al')[0]} et al. ({year})"
    if len(names) == 1:
        return f"{names[0]} ({year})"
    if len(names) == 2:
        return f"{names[0]} & {names[1]} ({year})"
    return f"{names[0]} et al. ({year})"
