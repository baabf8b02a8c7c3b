# Reference values for metaalliance/engine/permci.py: permutation-based confidence intervals,
# metafor's permutest(res, exact = TRUE, permci = TRUE) on rma.uni models.
#
# Run from the repository root:   Rscript tests/reference/permci.R
# Writes tests/reference/permci.json (R, metafor and metadat versions recorded). Per case:
#   res <- rma(yi, vi, mods = ..., method, test)
#   permutest(res, exact = TRUE, permci = TRUE, progbar = FALSE)
# permutest's default control: tol = eps^0.25, maxiter = 100, cialt = "one.sided",
# distfac = 1, extendInt = "no". Each bound is uniroot() of .permci(val) = p(val) - alpha/2
# (times 10 when negative), where p(val) is the one-sided exact permutation p-value of
# coefficient j after refitting to yi - val * X[, j]. The p-value is a step function of val, so
# only a step-for-step reproduction of uniroot's path agrees; every evaluation (val, f) is
# recorded under "path" (the last one is uniroot's own f(root)).
# Only exact tests are compared: random permutations use R's RNG.
suppressPackageStartupMessages({ library(metafor); library(jsonlite) })
out <- list(generated_by = "tests/reference/permci.R", R_version = R.version.string,
            metafor = as.character(packageVersion("metafor")),
            metadat = as.character(packageVersion("metadat")),
            control = "permutest() defaults: tol = eps^0.25, maxiter = 100, cialt = one.sided, distfac = 1, extendInt = no",
            cases = list())

# record every evaluation of metafor's .permci
PATH <- list()
orig <- metafor:::.permci
wrapped <- function(val, obj, j, exact, iter, progbar, level, digits, control) {
  f <- orig(val, obj, j, exact, iter, progbar, level, digits, control)
  PATH[[length(PATH) + 1]] <<- c(val = val, f = f, j = j)
  f
}
assignInNamespace(".permci", wrapped, ns = "metafor")

add <- function(name, dataset, yi, vi, X = NULL, names = NULL, method = "REML", test = "z",
                level = 95) {
  if (is.null(X)) {
    res <- rma(yi, vi, method = method, test = test, level = level)
  } else {
    res <- rma(yi, vi, mods = X, intercept = FALSE, method = method, test = test, level = level)
  }
  PATH <<- list()
  warn <- NULL
  pt <- withCallingHandlers(
    permutest(res, exact = TRUE, permci = TRUE, progbar = FALSE),
    warning = function(w) { warn <<- conditionMessage(w); invokeRestart("muffleWarning") })
  path <- if (length(PATH)) do.call(rbind, PATH) else matrix(numeric(0), 0, 3)
  Xm <- if (is.null(X)) matrix(1, length(yi), 1) else X
  out$cases[[length(out$cases) + 1]] <<- list(
    name = name, dataset = dataset, method = method, test = test, level = level,
    yi = as.numeric(yi), vi = as.numeric(vi), X = unname(Xm),
    names = if (is.null(names)) "intrcpt" else names,
    beta = as.numeric(res$beta), ci_lb = as.numeric(res$ci.lb), ci_ub = as.numeric(res$ci.ub),
    exact_iter = pt$exact.iter, pval = as.numeric(pt$pval), QMp = pt$QMp,
    permci = isTRUE(pt$permci),
    perm_ci_lb = if (isTRUE(pt$permci)) as.numeric(pt$ci.lb) else NULL,
    perm_ci_ub = if (isTRUE(pt$permci)) as.numeric(pt$ci.ub) else NULL,
    warning = warn,
    path = list(val = as.numeric(path[, 1]), f = as.numeric(path[, 2]),
                coef = as.integer(path[, 3])))
}

bcg <- escalc(measure = "RR", ai = tpos, bi = tneg, ci = cpos, di = cneg, data = dat.bcg)
m <- escalc(measure = "ZCOR", ri = ri, ni = ni, data = dat.molloy2014)
h <- dat.hackshaw1998
Xc <- cbind(intrcpt = 1, controlsnone = as.numeric(m$controls == "none"))

# intercept-only: 2^k sign flips
add("bcg_first10_reml", "dat.bcg (trials 1-10), log risk ratio", bcg$yi[1:10], bcg$vi[1:10])
add("hackshaw1998_first11_dl_knha", "dat.hackshaw1998 (studies 1-11), log odds ratio",
    h$yi[1:11], h$vi[1:11], method = "DL", test = "knha")
# meta-regression on a binary moderator: choose(16, 3) = 560 distinct permutations
add("molloy2014_controls_reml", "dat.molloy2014, Fisher z", m$yi, m$vi, Xc,
    colnames(Xc))
add("molloy2014_controls_dl_knha_90", "dat.molloy2014, Fisher z", m$yi, m$vi, Xc,
    colnames(Xc), method = "DL", test = "knha", level = 90)
# 2^5 = 32 sign flips: the smallest one-sided p is 1/32 > 0.025, so no bracket: NA bounds
add("bcg_first5_reml", "dat.bcg (trials 1-5), log risk ratio", bcg$yi[1:5], bcg$vi[1:5])
# 2^4 = 16 sign flips: 1/16 > 0.05, "number of permutations too low" warning, no permci
add("bcg_first4_reml", "dat.bcg (trials 1-4), log risk ratio", bcg$yi[1:4], bcg$vi[1:4])

assignInNamespace(".permci", orig, ns = "metafor")
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null", na = "null",
                  pretty = TRUE),
           "tests/reference/permci.json")
