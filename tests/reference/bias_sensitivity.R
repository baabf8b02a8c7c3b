# Reference values for metaalliance.analyses.bias and metaalliance.analyses.sensitivity (issue 4).
#
# Writes tests/reference/bias_sensitivity.json: for each public dataset (metadat) the yi/vi the
# tests use (so the tests need no R), and metafor's leave1out(), influence(), baujat(), cumul(),
# gosh() (all subsets, small k), regtest() (default and model="lm"), ranktest(), trimfill()
# (L0 and R0), fsn() (Rosenthal, Orwin, Rosenberg) for several (method, test) settings.
#
# Run from the repository root:  Rscript tests/reference/bias_sensitivity.R
# (make_reference.R sources this file.)

suppressPackageStartupMessages({
  library(metafor)
  library(jsonlite)
})

out_file <- file.path("tests", "reference", "bias_sensitivity.json")
pdf(NULL)  # baujat() draws; keep its plots off disk (no Rplots.pdf)

num <- function(x) unname(as.numeric(x))

# metafor stops Fisher scoring when tau^2 changes by < 1e-5 and finds PM/EB roots with
# uniroot(tol = eps^0.25); metaalliance.engine.estimators iterates to the optimum itself, so the
# reference fits are run to (nearly) full precision: the threshold is absolute on the tau^2
# scale, so it is set relative to the data's sampling variances (1e-10 alone leaves tau^2 a
# few 1e-10 short where Fisher scoring converges slowly, e.g. tau^2 ~ 1e-4).
# leave1out(), influence(), cumul(), gosh() and regtest() pass x$control on to their refits;
# trimfill() does not, so it gets the control through its '...'.
# The "default" section repeats the refitting analyses on two datasets with metafor's plain
# calls (control = list(), i.e. its default control: Fisher scoring to |change| <= 1e-5,
# uniroot(tol = eps^0.25) for PM), which metaalliance reproduces with control = "metafor".
ctrl_for <- function(vi) list(threshold = 1e-12 * mean(vi), tol = 1e-12, maxiter = 100000)
DEFAULT <- list()

fit_values <- function(res) {
  list(estimate = num(res$beta), se = num(res$se), stat = num(res$zval), pvalue = num(res$pval),
       ci_lower = num(res$ci.lb), ci_upper = num(res$ci.ub), tau2 = num(res$tau2),
       i2 = num(res$I2), h2 = num(res$H2), q = num(res$QE), q_pvalue = num(res$QEp), k = res$k)
}

list_values <- function(l) {
  # a list.rma from leave1out() / cumul(); the test statistic is zval or tval
  stat <- if (!is.null(l$zval)) l$zval else l$tval
  pv <- if (!is.null(l$pval)) l$pval else l$pvals
  tau2 <- if (!is.null(l$tau2)) l$tau2 else rep(0, length(l$estimate))
  list(label = as.character(l$slab), estimate = num(l$estimate), se = num(l$se),
       stat = num(stat), pvalue = num(pv), ci_lower = num(l$ci.lb), ci_upper = num(l$ci.ub),
       q = num(l$Q), q_pvalue = num(l$Qp), tau2 = num(tau2), i2 = num(l$I2), h2 = num(l$H2))
}

trimfill_values <- function(res, estimator, control = ctrl_for(res$vi)) {
  tf <- trimfill(res, estimator = estimator, control = control)
  filled <- if (tf$k0 > 0) which(tf$fill) else integer(0)
  c(list(k0 = tf$k0, se_k0 = num(tf$se.k0), side = tf$side,
         p_k0 = num(tf$p.k0),
         filled_yi = num(tf$yi[filled]), filled_vi = num(tf$vi[filled])),
    fit_values(tf))
}

regtest_values <- function(rt) {
  list(stat = num(rt$zval), pvalue = num(rt$pval), df = if (is.null(rt$dfs)) NA else num(rt$dfs),
       limit_estimate = num(rt$est), limit_ci_lower = num(rt$ci.lb),
       limit_ci_upper = num(rt$ci.ub))
}

lm_values <- function(yi, vi, predictor) {
  # PET (predictor = sqrt(vi)) and PEESE (predictor = vi): weighted least squares with weights
  # 1/vi and a multiplicative dispersion (Stanley & Doucouliagos 2014), i.e. regtest(model = "lm")
  x <- if (predictor == "sei") sqrt(vi) else vi
  fit <- lm(yi ~ x, weights = 1 / vi)
  s <- summary(fit)$coefficients
  ci <- confint(fit)
  list(intercept = num(s[1, 1]), intercept_se = num(s[1, 2]), intercept_t = num(s[1, 3]),
       intercept_pvalue = num(s[1, 4]), intercept_ci_lower = num(ci[1, 1]),
       intercept_ci_upper = num(ci[1, 2]), slope = num(s[2, 1]), slope_se = num(s[2, 2]),
       slope_t = num(s[2, 3]), slope_pvalue = num(s[2, 4]))
}

fsn_values <- function(yi, vi) {
  ros <- fsn(yi, vi, type = "Rosenthal")
  orw <- fsn(yi, vi, type = "Orwin")
  rbg <- fsn(yi, vi, type = "Rosenberg")
  list(rosenthal = list(n = num(ros$fsnum), pvalue = num(ros$pval), alpha = ros$alpha),
       orwin = list(n = num(orw$fsnum), mean = num(orw$meanes), target = num(orw$target)),
       rosenberg = list(n = num(rbg$fsnum), pvalue = num(rbg$pval), mean = num(rbg$meanes),
                        alpha = rbg$alpha))
}

model_values <- function(yi, vi, slab, order_by, method, test, control = ctrl_for(vi)) {
  res <- rma(yi, vi, method = method, test = test, slab = slab, control = control)
  l1o <- leave1out(res)
  inf <- influence(res)
  bj <- baujat(res)  # draws on the null device; we keep the returned coordinates
  cu <- cumul(res, order = order_by)
  cu0 <- cumul(res)
  rt <- suppressWarnings(ranktest(res))
  vals <- list(
    method = method, test = test,
    fit = fit_values(res),
    leave1out = list_values(l1o),
    influence = list(rstudent = num(inf$inf$rstudent), dffits = num(inf$inf$dffits),
                     cook_d = num(inf$inf$cook.d), cov_r = num(inf$inf$cov.r),
                     tau2_del = num(inf$inf$tau2.del), qe_del = num(inf$inf$QE.del),
                     hat = num(inf$inf$hat), weight = num(inf$inf$weight),
                     dfbetas = num(inf$dfbs[[1]]), inf = as.logical(inf$is.infl)),
    baujat = list(x = num(bj$x), y = num(bj$y)),
    cumulative = c(list(order = num(order_by)), list_values(cu)),
    cumulative_given_order = list_values(cu0),
    regtest = regtest_values(regtest(res)),
    ranktest = list(tau = num(rt$tau), pvalue = num(rt$pval),
                    ties = length(unique(vi)) < length(vi)),
    trimfill_L0 = trimfill_values(res, "L0", control),
    trimfill_R0 = trimfill_values(res, "R0", control)
  )
  vals
}

datasets <- list()

add_dataset <- function(name, source, measure, yi, vi, slab, year, settings) {
  yi <- num(yi); vi <- num(vi)
  models <- lapply(settings, function(s) model_values(yi, vi, slab, year, s[1], s[2]))
  names(models) <- vapply(settings, function(s) paste(s, collapse = "_"), "")
  datasets[[name]] <<- list(
    source = source, measure = measure, yi = yi, vi = vi, labels = as.character(slab),
    year = num(year),
    models = models,
    regtest_lm_sei = c(regtest_values(regtest(yi, vi, model = "lm", predictor = "sei")),
                       lm_values(yi, vi, "sei")),
    regtest_lm_vi = c(regtest_values(regtest(yi, vi, model = "lm", predictor = "vi")),
                      lm_values(yi, vi, "vi")),
    failsafe_n = fsn_values(yi, vi)
  )
}

# --- dat.molloy2014: conscientiousness and medication adherence, Fisher z (our own scale) -------
dat <- escalc(measure = "ZCOR", ri = ri, ni = ni, data = dat.molloy2014)
add_dataset("molloy2014", "metadat::dat.molloy2014, escalc(measure = 'ZCOR', ri, ni)", "ZCOR",
            dat$yi, dat$vi, paste0(dat$authors, " (", dat$year, ")"), dat$year,
            list(c("REML", "z"), c("DL", "knha"), c("PM", "z"), c("ML", "z"), c("EE", "z")))

# --- dat.bcg: BCG vaccine trials, log risk ratio ----------------------------------------------
dat <- escalc(measure = "RR", ai = tpos, bi = tneg, ci = cpos, di = cneg, data = dat.bcg)
add_dataset("bcg", "metadat::dat.bcg, escalc(measure = 'RR', tpos, tneg, cpos, cneg)", "RR",
            dat$yi, dat$vi, paste0(dat$author, " (", dat$year, ")"), dat$year,
            list(c("REML", "z"), c("DL", "z"), c("REML", "knha"), c("SJ", "z"), c("HE", "z")))

# --- dat.hackshaw1998: environmental tobacco smoke and lung cancer, log odds ratio (k = 37) ------
dat <- dat.hackshaw1998
add_dataset("hackshaw1998", "metadat::dat.hackshaw1998, yi and vi as supplied (log OR)", "OR",
            dat$yi, dat$vi, paste0(dat$author, " (", dat$year, ")"), dat$year,
            list(c("REML", "z"), c("DL", "z"), c("EB", "z")))

# --- dat.pritz1997: ICH outcome proportions, logit transformed --------------------------------
dat <- escalc(measure = "PLO", xi = xi, ni = ni, data = dat.pritz1997)
add_dataset("pritz1997", "metadat::dat.pritz1997, escalc(measure = 'PLO', xi, ni)", "PLO",
            dat$yi, dat$vi, as.character(dat$authors), dat$study,
            list(c("REML", "z"), c("HS", "z")))

# --- GOSH with all subsets (deterministic) on small k ------------------------------------------
gosh_values <- function(yi, vi, method, control = ctrl_for(vi)) {
  res <- rma(yi, vi, method = method, control = control)
  g <- gosh(res, progbar = FALSE)
  list(method = method, k = num(g$res$k), q = num(g$res$QE), i2 = num(g$res$I2),
       h2 = num(g$res$H2), tau2 = num(g$res$tau2), estimate = num(g$res$estimate),
       incl = apply(g$incl, 1, function(r) paste(as.integer(r), collapse = "")))
}
dat <- escalc(measure = "MD", m1i = m1i, sd1i = sd1i, n1i = n1i, m2i = m2i, sd2i = sd2i,
              n2i = n2i, data = dat.normand1999)
mol <- escalc(measure = "ZCOR", ri = ri, ni = ni, data = dat.molloy2014)[1:10, ]
gosh <- list(
  normand1999 = list(source = "metadat::dat.normand1999, escalc(measure = 'MD')",
                     yi = num(dat$yi), vi = num(dat$vi),
                     fits = list(REML = gosh_values(dat$yi, dat$vi, "REML"),
                                 DL = gosh_values(dat$yi, dat$vi, "DL"),
                                 EE = gosh_values(dat$yi, dat$vi, "EE"))),
  molloy2014_first10 = list(source = "metadat::dat.molloy2014 rows 1-10, escalc(measure = 'ZCOR')",
                            yi = num(mol$yi), vi = num(mol$vi),
                            fits = list(REML = gosh_values(mol$yi, mol$vi, "REML"),
                                        PM = gosh_values(mol$yi, mol$vi, "PM")))
)

# --- metafor's default control (plain calls) on two datasets ------------------------------------
default_dataset <- function(name, settings) {
  ds <- datasets[[name]]
  models <- lapply(settings, function(s) model_values(ds$yi, ds$vi, ds$labels, ds$year, s[1],
                                                      s[2], DEFAULT))
  names(models) <- vapply(settings, function(s) paste(s, collapse = "_"), "")
  models
}
default <- list(
  datasets = list(
    molloy2014 = default_dataset("molloy2014", list(c("REML", "z"), c("PM", "z"), c("ML", "z"),
                                                    c("EB", "knha"))),
    hackshaw1998 = default_dataset("hackshaw1998", list(c("REML", "z"), c("PM", "z"),
                                                        c("REML", "knha")))),
  gosh = list(molloy2014_first10 = list(REML = gosh_values(mol$yi, mol$vi, "REML", DEFAULT),
                                        PM = gosh_values(mol$yi, mol$vi, "PM", DEFAULT),
                                        ML = gosh_values(mol$yi, mol$vi, "ML", DEFAULT))))

out <- list(
  R_version = R.version.string,
  metafor_version = as.character(packageVersion("metafor")),
  generated_by = "tests/reference/bias_sensitivity.R",
  datasets = datasets,
  gosh = gosh,
  default = default
)

write_json(out, out_file, auto_unbox = TRUE, digits = NA, na = "null", pretty = FALSE)
invisible(dev.off())
cat("wrote", out_file, "\n")
