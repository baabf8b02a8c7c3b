# Reference values for the univariate engine (metaalliance.engine.estimators / inference / models).
#
# Run from tests/reference (make reference, or: Rscript univariate.R); writes univariate.json.
# Needs R with metafor, metadat (datasets) and jsonlite. Tests read only the JSON.
#
# What is computed (metafor calls, one entry per dataset x method x test):
#   rma(yi, vi, method, test, control = CTRL)             estimate, se, stat, pval, CI, tau2,
#                                                         se.tau2, QE, I2, H2
#   predict(res)                                          prediction interval
#   confint(res, control = CI_CTRL)                       Q-profile CIs of tau2, I2, H2
#   rma(yi, vi, mods = ~ f + x, method, test)             coefficients, QM, QE, R2, ...
#   subgroups: rma(..., subset = g == level) per level + rma(est, sei, mods = ~ level,
#              method = "EE")$QM (separate); rma(mods = ~ g) and rma(mods = ~ g - 1) (pooled)
#   permutest(res, exact = TRUE)                          exact permutation p-values
#   permutest(res, iter = 1000, seed = 1234)              random (compared loosely: R's RNG)
#
# Convergence: metafor's defaults (threshold = 1e-5 for Fisher scoring/EB, uniroot
# tol = eps^0.25 for PM and the Q-profile CIs) stop up to ~1e-5 (absolute) away from the
# optimum. metaalliance has both: control = "metafor" (its default) stops exactly where
# metafor's defaults stop, control = "optimum" iterates to the optimum. So every analysis is
# computed twice: "tight" (fits, metareg, subgroups, permutest) is metafor with
# control = list(threshold = 1e-10, tol = 1e-12, maxiter = 1000) and confint with
# control = list(tol = 1e-12), compared with control = "optimum"; "default" (fits_default,
# metareg_default, subgroups_default, permutest_default) is metafor's plain calls (no control
# argument at all), compared with control = "metafor". Both at the contract's 1e-6.

suppressMessages({
  library(metafor)
  library(jsonlite)
})

CTRL <- list(threshold = 1e-10, tol = 1e-12, maxiter = 1000)
CI_CTRL <- list(tol = 1e-12)
# control = list() is metafor's plain call: rma() and confint() take a missing control as
# list(), and permutest(), leave1out() ... refit with that x$control
DEFAULT <- list()
METHODS <- c("EE", "DL", "HE", "HS", "SJ", "ML", "REML", "EB", "PM")
TESTS <- c("z", "knha")

num <- function(x) if (is.null(x) || length(x) == 0 || all(is.na(x))) NULL else unname(as.numeric(x))

# ---- datasets --------------------------------------------------------------------------------

datasets <- list()

d <- escalc(measure = "ZCOR", ri = ri, ni = ni, data = dat.molloy2014)
datasets$molloy2014 <- list(
  source = "dat.molloy2014: conscientiousness and medication adherence (Molloy et al., 2014)",
  call = 'escalc(measure = "ZCOR", ri = ri, ni = ni, data = dat.molloy2014)',
  measure = "ZCOR", yi = num(d$yi), vi = num(d$vi),
  labels = paste(d$authors, d$year),
  data = list(controls = d$controls, meanage = d$meanage, design = d$design))

d <- escalc(measure = "ZCOR", ri = ri, ni = ni, data = dat.mcdaniel1994)
datasets$mcdaniel1994 <- list(
  source = "dat.mcdaniel1994: validity of employment interviews (McDaniel et al., 1994)",
  call = 'escalc(measure = "ZCOR", ri = ri, ni = ni, data = dat.mcdaniel1994)',
  measure = "ZCOR", yi = num(d$yi), vi = num(d$vi), labels = paste("Study", d$study),
  data = list(type = d$type, struct = d$struct))

d <- escalc(measure = "ZCOR", ri = ri, ni = ni,
            data = subset(dat.craft2003, var1 == "conf" & var2 == "perf" & !is.na(ri)))
datasets$craft2003 <- list(
  source = "dat.craft2003: self-confidence and sport performance (Craft et al., 2003); conf-perf rows, the row without r removed",
  call = 'escalc(measure = "ZCOR", ri = ri, ni = ni, data = subset(dat.craft2003, var1 == "conf" & var2 == "perf" & !is.na(ri)))',
  measure = "ZCOR", yi = num(d$yi), vi = num(d$vi), labels = paste("Study", d$study),
  data = list(sport = d$sport))

d <- escalc(measure = "RR", ai = tpos, bi = tneg, ci = cpos, di = cneg, data = dat.bcg)
datasets$bcg <- list(
  source = "dat.bcg: BCG vaccine trials (Colditz et al., 1994), log risk ratios",
  call = 'escalc(measure = "RR", ai = tpos, bi = tneg, ci = cpos, di = cneg, data = dat.bcg)',
  measure = "generic", yi = num(d$yi), vi = num(d$vi), labels = paste(d$author, d$year),
  data = list(alloc = d$alloc, ablat = d$ablat, year = d$year))

d <- escalc(measure = "MD", m1i = m1i, sd1i = sd1i, n1i = n1i, m2i = m2i, sd2i = sd2i,
            n2i = n2i, data = dat.normand1999)
datasets$normand1999 <- list(
  source = "dat.normand1999: length of hospital stay, specialist vs routine care (Normand, 1999), mean differences",
  call = 'escalc(measure = "MD", m1i = m1i, sd1i = sd1i, n1i = n1i, m2i = m2i, sd2i = sd2i, n2i = n2i, data = dat.normand1999)',
  measure = "generic", yi = num(d$yi), vi = num(d$vi), labels = d$source,
  data = list(source = d$source))

# more datasets (other effect measures and scales), against overfitting to the first five
d <- dat.bangertdrowns2004
datasets$bangertdrowns2004 <- list(
  source = "dat.bangertdrowns2004: writing-to-learn interventions (Bangert-Drowns et al., 2004), standardized mean differences",
  call = "dat.bangertdrowns2004 (yi, vi as shipped)",
  measure = "generic", yi = num(d$yi), vi = num(d$vi), labels = paste(d$author, d$year),
  data = list(grade = d$grade, imag = d$imag))

d <- dat.hackshaw1998
datasets$hackshaw1998 <- list(
  source = "dat.hackshaw1998: environmental tobacco smoke and lung cancer (Hackshaw et al., 1998), log odds ratios",
  call = "dat.hackshaw1998 (yi, vi as shipped)",
  measure = "generic", yi = num(d$yi), vi = num(d$vi), labels = paste(d$author, d$year),
  data = list(design = d$design, year = d$year))

d <- subset(dat.kalaian1996, outcome == "verbal")
datasets$kalaian1996 <- list(
  source = "dat.kalaian1996: SAT coaching, verbal outcome rows (Kalaian & Raudenbush, 1996), standardized mean differences",
  call = 'subset(dat.kalaian1996, outcome == "verbal") (yi, vi as shipped)',
  measure = "generic", yi = num(d$yi), vi = num(d$vi), labels = d$study,
  data = list(ets = d$ets, homework = d$homework))

df_of <- function(ds) {
  out <- data.frame(yi = ds$yi, vi = ds$vi)
  for (nm in names(ds$data)) out[[nm]] <- ds$data[[nm]]
  out
}

# ---- random-effects models ---------------------------------------------------------------------

fit_entry <- function(name, method, test, control, ci_control) {
  ds <- datasets[[name]]
  res <- suppressWarnings(rma(ds$yi, ds$vi, method = method, test = test, control = control))
  pr <- predict(res)
  out <- list(dataset = name, method = method, test = test,
              estimate = num(res$beta), se = num(res$se), stat = num(res$zval),
              pvalue = num(res$pval), ci_lower = num(res$ci.lb), ci_upper = num(res$ci.ub),
              pi_lower = num(pr$pi.lb), pi_upper = num(pr$pi.ub),
              tau2 = num(res$tau2), se_tau2 = num(res$se.tau2), q = num(res$QE),
              q_df = res$k - res$p, q_pvalue = num(res$QEp), i2 = num(res$I2), h2 = num(res$H2),
              vt = num(res$vt), df = if (test == "knha") res$k - res$p else NULL)
  if (method != "EE") {
    ci <- if (is.null(ci_control)) confint(res) else confint(res, control = ci_control)
    out$tau2_ci_lower <- num(ci$random["tau^2", "ci.lb"])
    out$tau2_ci_upper <- num(ci$random["tau^2", "ci.ub"])
    out$i2_ci_lower <- num(ci$random["I^2(%)", "ci.lb"])
    out$i2_ci_upper <- num(ci$random["I^2(%)", "ci.ub"])
    out$h2_ci_lower <- num(ci$random["H^2", "ci.lb"])
    out$h2_ci_upper <- num(ci$random["H^2", "ci.ub"])
  }
  out
}

fits <- list()
fits_default <- list()
for (name in names(datasets)) for (m in METHODS) for (t in TESTS) {
  fits[[length(fits) + 1]] <- fit_entry(name, m, t, CTRL, CI_CTRL)
  fits_default[[length(fits_default) + 1]] <- fit_entry(name, m, t, DEFAULT, NULL)
}

# ---- meta-regression -------------------------------------------------------------------------

MODS <- list(
  list(dataset = "molloy2014", formula = "~ controls + meanage"),
  list(dataset = "bcg", formula = "~ alloc + ablat"),
  list(dataset = "mcdaniel1994", formula = "~ type + struct"),
  list(dataset = "craft2003", formula = "~ sport"),
  list(dataset = "bangertdrowns2004", formula = "~ grade + imag"),
  list(dataset = "hackshaw1998", formula = "~ design + year"),
  list(dataset = "kalaian1996", formula = "~ ets + homework"))

reg_entry <- function(spec, method, test, control = CTRL, ci_control = CI_CTRL) {
  ds <- datasets[[spec$dataset]]
  dat <- df_of(ds)
  res <- suppressWarnings(rma(yi, vi, mods = as.formula(spec$formula), data = dat,
                                   method = method, test = test, control = control))
  out <- list(dataset = spec$dataset, formula = spec$formula, method = method, test = test,
              k = res$k,
              coefficients = lapply(seq_len(res$p), function(j) list(
                name = rownames(res$beta)[j], estimate = num(res$beta[j]), se = num(res$se[j]),
                stat = num(res$zval[j]), pvalue = num(res$pval[j]),
                ci_lower = num(res$ci.lb[j]), ci_upper = num(res$ci.ub[j]))),
              tau2 = num(res$tau2), se_tau2 = num(res$se.tau2),
              qm = num(res$QM), qm_df = res$QMdf[1],
              qm_df2 = if (test == "knha") res$QMdf[2] else NULL, qm_pvalue = num(res$QMp),
              qe = num(res$QE), qe_df = res$k - res$p, qe_pvalue = num(res$QEp),
              i2 = num(res$I2), h2 = num(res$H2), r2 = num(res$R2))
  if (method != "EE") {
    ci <- if (is.null(ci_control)) confint(res) else confint(res, control = ci_control)
    out$tau2_ci_lower <- num(ci$random["tau^2", "ci.lb"])
    out$tau2_ci_upper <- num(ci$random["tau^2", "ci.ub"])
  }
  out
}

metareg <- list()
metareg_default <- list()
for (spec in MODS) for (m in METHODS) for (t in TESTS) {
  metareg[[length(metareg) + 1]] <- reg_entry(spec, m, t)
  metareg_default[[length(metareg_default) + 1]] <- reg_entry(spec, m, t, DEFAULT, NULL)
}

# ---- subgroups -------------------------------------------------------------------------------

SUBS <- list(list(dataset = "molloy2014", by = "design"),
             list(dataset = "mcdaniel1994", by = "type"),
             list(dataset = "bcg", by = "alloc"),
             list(dataset = "hackshaw1998", by = "design"))
SUB_METHODS <- c("REML", "DL", "PM", "ML")
SUB_METHODS_DEFAULT <- c("REML", "DL", "PM", "ML", "EB")

sub_entry <- function(spec, method, test, tau2_model, control = CTRL) {
  ds <- datasets[[spec$dataset]]
  dat <- df_of(ds)
  g <- dat[[spec$by]]
  levs <- sort(unique(g))
  out <- list(dataset = spec$dataset, by = spec$by, method = method, test = test,
              tau2_model = tau2_model)
  if (tau2_model == "separate") {
    rows <- lapply(levs, function(lv) {
      r <- suppressWarnings(rma(yi, vi, data = dat, subset = g == lv, method = method,
                                     test = test, control = control))
      list(level = lv, k = r$k, estimate = num(r$beta), se = num(r$se),
           ci_lower = num(r$ci.lb), ci_upper = num(r$ci.ub), tau2 = num(r$tau2))
    })
    comp <- data.frame(estimate = sapply(rows, `[[`, "estimate"),
                       se = sapply(rows, `[[`, "se"), level = levs)
    # the metafor documentation's test of subgroup differences
    qb <- rma(estimate, sei = se, mods = ~ level, method = "EE", data = comp)
    out$call_q_between <- 'rma(estimate, sei = se, mods = ~ level, method = "EE", data = comp)'
    out$subgroups <- rows
    out$q_between <- num(qb$QM)
    out$q_between_df <- qb$QMdf[1]
    out$q_between_pvalue <- num(qb$QMp)
  } else {
    fm <- as.formula(paste("~", spec$by))
    r1 <- suppressWarnings(rma(yi, vi, mods = fm, data = dat, method = method,
                                    test = test, control = control))
    r0 <- suppressWarnings(rma(yi, vi, mods = as.formula(paste("~", spec$by, "- 1")),
                                    data = dat, method = method, test = test,
                                    control = control))
    out$subgroups <- lapply(seq_along(levs), function(j) list(
      level = levs[j], k = sum(g == levs[j], na.rm = TRUE), estimate = num(r0$beta[j]), se = num(r0$se[j]),
      ci_lower = num(r0$ci.lb[j]), ci_upper = num(r0$ci.ub[j]), tau2 = num(r0$tau2)))
    out$q_between <- num(r1$QM)
    out$q_between_df <- r1$QMdf[1]
    out$q_between_df2 <- if (test == "knha") r1$QMdf[2] else NULL
    out$q_between_pvalue <- num(r1$QMp)
  }
  out
}

subgroups <- list()
for (spec in SUBS) for (m in SUB_METHODS) for (t in TESTS) for (tm in c("separate", "pooled"))
  subgroups[[length(subgroups) + 1]] <- sub_entry(spec, m, t, tm)
subgroups_default <- list()
for (spec in SUBS) for (m in SUB_METHODS_DEFAULT) for (t in TESTS)
  for (tm in c("separate", "pooled"))
    subgroups_default[[length(subgroups_default) + 1]] <- sub_entry(spec, m, t, tm, DEFAULT)

# ---- permutation tests -----------------------------------------------------------------------

PERMS <- list(
  list(dataset = "normand1999", formula = NULL, method = "REML", test = "z", exact = TRUE),
  list(dataset = "normand1999", formula = NULL, method = "DL", test = "knha", exact = TRUE),
  list(dataset = "craft2003", formula = NULL, method = "REML", test = "knha", exact = TRUE),
  list(dataset = "craft2003", formula = "~ sport", method = "REML", test = "z", exact = TRUE),
  list(dataset = "craft2003", formula = "~ sport", method = "PM", test = "knha", exact = TRUE),
  list(dataset = "molloy2014", formula = "~ controls", method = "REML", test = "z", exact = TRUE),
  list(dataset = "molloy2014", formula = "~ controls + meanage", method = "REML", test = "z",
       exact = FALSE, iter = 1000, seed = 1234),
  list(dataset = "bcg", formula = "~ alloc + ablat", method = "DL", test = "knha",
       exact = FALSE, iter = 1000, seed = 1234))

# exact permutation tests also under metafor's default control (permutest refits with
# x$control, i.e. the defaults of a plain rma() call)
PERMS_DEFAULT <- c(Filter(function(s) s$exact, PERMS), list(
  list(dataset = "normand1999", formula = NULL, method = "PM", test = "z", exact = TRUE),
  list(dataset = "craft2003", formula = NULL, method = "EB", test = "z", exact = TRUE),
  list(dataset = "craft2003", formula = "~ sport", method = "ML", test = "knha", exact = TRUE),
  list(dataset = "molloy2014", formula = "~ controls", method = "PM", test = "knha",
       exact = TRUE)))

perm_entry <- function(spec, control = CTRL) {
  ds <- datasets[[spec$dataset]]
  dat <- df_of(ds)
  if (is.null(spec$formula)) {
    res <- rma(yi, vi, data = dat, method = spec$method, test = spec$test,
                    control = control)
  } else {
    res <- rma(yi, vi, mods = as.formula(spec$formula), data = dat, method = spec$method,
                    test = spec$test, control = control)
  }
  if (spec$exact) {
    pt <- permutest(res, exact = TRUE, progbar = FALSE)
  } else {
    pt <- permutest(res, iter = spec$iter, progbar = FALSE, seed = spec$seed)
  }
  list(dataset = spec$dataset, formula = spec$formula, method = spec$method, test = spec$test,
       exact = spec$exact, iter = if (spec$exact) NULL else spec$iter,
       seed = if (spec$exact) NULL else spec$seed,
       n_permutations = length(pt$QM.perm),
       n_failed = sum(is.na(pt$QM.perm)),
       names = rownames(res$beta), pvalues = num(pt$pval), qm_pvalue = num(pt$QMp))
}

perms <- lapply(PERMS, perm_entry)
perms_default <- lapply(PERMS_DEFAULT, perm_entry, control = DEFAULT)

# ---- write -----------------------------------------------------------------------------------

out <- list(
  generated_by = "tests/reference/univariate.R",
  r_version = R.version.string,
  metafor_version = as.character(packageVersion("metafor")),
  metadat_version = as.character(packageVersion("metadat")),
  control = list(rma = CTRL, confint = CI_CTRL),
  datasets = datasets,
  fits = fits,
  fits_default = fits_default,
  metareg = metareg,
  metareg_default = metareg_default,
  subgroups = subgroups,
  subgroups_default = subgroups_default,
  permutest = perms,
  permutest_default = perms_default)

write_json(out, "univariate.json", digits = NA, auto_unbox = TRUE, null = "null", na = "null",
           pretty = TRUE)
cat("wrote univariate.json:", length(fits), "+", length(fits_default), "fits,",
    length(metareg), "+", length(metareg_default), "meta-regressions,", length(subgroups), "+",
    length(subgroups_default), "subgroup analyses,", length(perms), "+", length(perms_default),
    "permutation tests (tight + default control)\n")
