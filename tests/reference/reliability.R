# Reference values for the bad-input and edge cases of tests/test_reliability.py.
#
# Run from the repository root (make reference, or: Rscript tests/reference/reliability.R);
# writes tests/reference/reliability.json. Needs R with metafor and jsonlite. Tests read only
# the JSON. Each case records the metafor call, its numbers, and the warnings or the error
# metafor gives, so that docs/reliability.md can say where metaalliance follows metafor and
# where it deliberately stops instead (e.g. a Knapp-Hartung test with identical effects, where
# metafor reports se = 0 and t = Inf).
#
# The data are small made-up numbers for edge cases (simulated in the sense of
# CONTRACT.md: written by hand for the tests, not findings).

suppressMessages({
  library(metafor)
  library(jsonlite)
})

CTRL <- list(threshold = 1e-10, tol = 1e-12, maxiter = 1000)
METHODS <- c("EE", "DL", "HE", "HS", "SJ", "ML", "REML", "EB", "PM")
num <- function(x) if (is.null(x) || length(x) == 0 || all(is.na(x))) NULL else unname(as.numeric(x))

# run an expression; return its value (or NULL), its warnings and its error message
catching <- function(expr) {
  warns <- character(0)
  value <- withCallingHandlers(
    tryCatch(expr, error = function(e) structure(list(msg = conditionMessage(e)), class = "err")),
    warning = function(w) {
      warns <<- c(warns, conditionMessage(w))
      invokeRestart("muffleWarning")
    })
  warns <- as.list(warns)            # a JSON array even with one warning
  if (inherits(value, "err")) return(list(value = NULL, warnings = warns, error = value$msg))
  list(value = value, warnings = warns, error = NULL)
}

fit_values <- function(res) list(
  k = res$k, estimate = num(res$b), se = num(res$se), zval = num(res$zval), pval = num(res$pval),
  ci_lower = num(res$ci.lb), ci_upper = num(res$ci.ub), tau2 = num(res$tau2),
  q = num(res$QE), q_pvalue = num(res$QEp), i2 = num(res$I2), h2 = num(res$H2))

cases <- list()

# two studies: r = .3 (n = 50), r = .1 (n = 80)
d2 <- escalc(measure = "ZCOR", ri = c(.3, .1), ni = c(50, 80))
cases$k2 <- list(call = 'rma(yi, vi, method = m) for escalc("ZCOR", ri = c(.3, .1), ni = c(50, 80))',
                 yi = num(d2$yi), vi = num(d2$vi), methods = list())
for (m in METHODS) {
  r <- catching(rma(d2$yi, d2$vi, method = m, control = CTRL))
  cases$k2$methods[[m]] <- c(fit_values(r$value), list(warnings = r$warnings))
}

# one study
r <- catching(rma(d2$yi[1], d2$vi[1], control = CTRL))
cases$k1 <- c(list(call = "rma(yi[1], vi[1])", yi = num(d2$yi[1]), vi = num(d2$vi[1])),
              fit_values(r$value), list(warnings = r$warnings))

# identical effects: r = .3 three times (n = 50, 80, 120)
di <- escalc(measure = "ZCOR", ri = c(.3, .3, .3), ni = c(50, 80, 120))
r <- catching(rma(di$yi, di$vi, control = CTRL))
cases$identical <- c(list(call = 'rma(yi, vi) for escalc("ZCOR", ri = c(.3, .3, .3), ni = c(50, 80, 120))',
                          yi = num(di$yi), vi = num(di$vi)), fit_values(r$value),
                     list(warnings = r$warnings))
r <- catching(rma(di$yi, di$vi, test = "knha", control = CTRL))
cases$identical_knha <- c(list(call = 'rma(yi, vi, test = "knha") (same data)'),
                          fit_values(r$value), list(warnings = r$warnings,
                          note = "metafor: se = 0, t = Inf, CI of width 0"))

# extreme variance ratio: 1e-8 next to 1e3
ye <- c(0.3, 0.2, 0.1, -0.4); ve <- c(1e-8, 1000, 0.05, 500)
cases$extreme_vi <- list(call = "rma(yi, vi, method = m), vi = c(1e-8, 1000, 0.05, 500)",
                         yi = ye, vi = ve, methods = list())
for (m in METHODS) {
  r <- catching(rma(ye, ve, method = m, control = CTRL))
  cases$extreme_vi$methods[[m]] <- c(fit_values(r$value), list(warnings = r$warnings))
}

# a row with a missing yi: omitted with a warning
r <- catching(rma(c(0.3, NA, 0.1, 0.25), c(0.02, 0.01, 0.03, 0.015), control = CTRL))
cases$missing_yi <- c(list(call = "rma(c(.3, NA, .1, .25), c(.02, .01, .03, .015))"),
                      fit_values(r$value), list(warnings = r$warnings))

# a factor level present in one row
dd <- data.frame(yi = c(0.3, 0.2, 0.1, 0.25, 0.05, 0.4),
                 vi = c(0.02, 0.013, 0.018, 0.015, 0.011, 0.027),
                 lvl = c("p", "p", "q", "p", "p", "p"), g = "a", x1 = 1:6, x2 = 2 * (1:6))
r <- catching(rma(yi, vi, mods = ~ lvl, data = dd, control = CTRL))
cases$single_row_level <- list(
  call = "rma(yi, vi, mods = ~ lvl, data = dd)", yi = dd$yi, vi = dd$vi, lvl = dd$lvl,
  coefficients = num(r$value$b), se = num(r$value$se), tau2 = num(r$value$tau2),
  qm = num(r$value$QM), qe = num(r$value$QE), warnings = r$warnings)

# a constant text moderator; a constant numeric one; two collinear ones
r <- catching(rma(yi, vi, mods = ~ g, data = dd))
cases$one_level_factor <- list(call = "rma(yi, vi, mods = ~ g, data = dd), g constant",
                               error = r$error)
r <- catching(rma(yi, vi, mods = ~ x1 + x2, data = dd))
cases$collinear <- list(call = "rma(yi, vi, mods = ~ x1 + x2, data = dd), x2 = 2 x1",
                        warnings = r$warnings, coefficients = num(r$value$b),
                        names = rownames(r$value$b))

# duplicated study labels
r <- catching(rma(d2$yi, d2$vi, slab = c("A", "A")))
cases$duplicate_labels <- list(call = 'rma(yi, vi, slab = c("A", "A"))$slab',
                               slab = as.character(r$value$slab))

# REML whose Fisher scoring (metafor's default) does not converge: a near-saturated
# meta-regression (simulated: numpy default_rng(1810), as tests/test_engine.py's
# test_divergent_fisher_scoring_is_rescued). metafor stops with an error; with step halving
# (stepadj = 0.5) it reaches the optimum that metaalliance's safeguarded search finds.
df <- data.frame(
  yi = c(-0.017611663453911207, 0.2300519483392412, 0.1406429267615585, -0.20908190070601407, 0.05306998767261465, -0.16098702821797942, -0.01752839790296878, -0.0629119419911548, -0.003287387308134327, -0.04297731541086907),
  vi = c(0.011673000085394554, 0.047684670441800796, 0.01658126256134317, 0.02460317872265465, 0.005711686053971435, 0.023142729925966693, 0.030329223110134994, 0.04021343153482555, 0.04580600707438564, 0.017793778058759275),
  a = c(1, 0, 0, 0, 0, 0, 0, 0, 0, 0), b = c(0, 1, 0, 0, 0, 0, 0, 0, 0, 0), c = c(0, 0, 1, 0, 0, 0, 0, 0, 0, 0),
  x = c(1.328951217938969, -0.521011508605091, -0.10313345571774729, 1.238904748376531, 0.2559608920313837, 0.758112452702141, -0.6295861524473827, 0.9361214762977742, 0.9276894430242717, -1.9977357798093645))
r <- catching(rma(yi, vi, mods = ~ a + b + c + x, data = df))
r2 <- catching(rma(yi, vi, mods = ~ a + b + c + x, data = df,
                   control = c(CTRL, list(stepadj = 0.5, maxiter = 10000))))
cases$fisher_scoring_fails <- list(
  call = "rma(yi, vi, mods = ~ a + b + c + x, data = df)", data = as.list(df),
  error = r$error,
  optimum_call = "the same with control = list(threshold = 1e-10, tol = 1e-12, stepadj = 0.5, maxiter = 10000)",
  tau2 = num(r2$value$tau2), coefficients = num(r2$value$b), se = num(r2$value$se))

out <- list(
  r_version = R.version.string,
  metafor_version = as.character(packageVersion("metafor")),
  control = CTRL,
  cases = cases)
write_json(out, file.path("tests", "reference", "reliability.json"), digits = NA,
           auto_unbox = TRUE, null = "null", na = "null", pretty = TRUE)
