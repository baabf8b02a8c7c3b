# Reference values for metaalliance/analyses/selection.py (selection models for publication bias),
# computed with R's metafor selmodel().
#
# Run from the repository root:   Rscript tests/reference/selection.R
# Writes tests/reference/selection.json; the Python tests read only that file (no R needed).
#
# Every case stores its inputs (yi, vi and, with moderators, X with its intercept column) at full
# precision, the R call, and metafor's results. The input model is rma(yi, vi, method = "ML")
# (selmodel refits any other method with ML). Calls:
#   selmodel(res, type = "stepfun", steps = ..., alternative = ...)   Vevea-Hedges step function
#   selmodel(res, type = "beta" | "halfnorm" | "negexp" | "logistic" | "power")
# metafor maximises with optim(BFGS) on log(tau2) and logit-scaled delta, integrates the
# continuous weight functions with integrate() (rel.tol = .Machine$double.eps^0.25) and takes the
# Hessian numerically (numDeriv, r = 6): hence the looser test tolerances (see the test module).
#
# Optimiser: metafor's default optim(BFGS) stops at reltol = 1e-8 and integrate() at
# rel.tol = eps^0.25, which leaves the estimates of the smooth types up to ~1e-3 from the optimum
# on flat likelihoods. The references are therefore computed with
#   TIGHT = list(reltol = 1e-10, maxit = 1000, intCtrl = list(rel.tol = 1e-10, subdivisions = 1000L))
# (reltol below ~1e-10 only chases the integration noise until maxit)
# (stored in the JSON); where metafor fails with it, the default control is used instead
# ("control_used").
#
# Datasets (package metadat):
#   dat.molloy2014     correlations (ZCOR); one per study
#   dat.hackshaw1998   log odds ratios (the example of ?selmodel)
#   dat.bcg            log risk ratios, with the moderator ablat (alternative = "less": the
#                      protective effects are negative)
# Cases where metafor warns or fails are stored with their message ("error" / "warning").

suppressPackageStartupMessages({
  library(metafor)
  library(jsonlite)
})

out <- list(
  generated_by = "tests/reference/selection.R",
  R_version = R.version.string,
  metafor = as.character(packageVersion("metafor")),
  metadat = as.character(packageVersion("metadat")),
  numDeriv = as.character(packageVersion("numDeriv")),
  cases = list()
)

TIGHT <- list(reltol = 1e-10, maxit = 1000, intCtrl = list(rel.tol = 1e-10, subdivisions = 1000L))
out$control <- "TIGHT = list(reltol = 1e-10, maxit = 1000, intCtrl = list(rel.tol = 1e-10, subdivisions = 1000L)); where that fails, metafor's default control (field control_used)"

na2null <- function(x) { x <- as.numeric(x); if (length(x) == 0) return(NULL); lapply(x, function(v) if (is.na(v)) NULL else v) }

add_case <- function(name, dataset, yi, vi, type, steps = NULL, alternative = "greater",
                     X = NULL, mods = NULL) {
  res <- if (is.null(mods)) rma(yi, vi, method = "ML") else rma(yi, vi, mods = mods, method = "ML")
  warn <- NULL
  args <- list(res, type = type, alternative = alternative, control = TIGHT)
  if (!is.null(steps)) args$steps <- steps
  call <- sprintf("selmodel(rma(yi, vi%s, method = \"ML\"), type = \"%s\"%s, alternative = \"%s\", control = TIGHT)",
                  if (is.null(mods)) "" else ", mods = X[, -1]", type,
                  if (is.null(steps)) "" else sprintf(", steps = c(%s)", paste(steps, collapse = ", ")),
                  alternative)
  run <- function(a) withCallingHandlers(
    tryCatch(do.call(selmodel, a), error = function(e) e),
    warning = function(w) { warn <<- conditionMessage(w); invokeRestart("muffleWarning") })
  sel <- run(args)
  control_used <- "TIGHT"
  if (inherits(sel, "error") && !grepl("intervals do not contain", conditionMessage(sel))) {
    warn <- NULL
    a2 <- args
    a2$control <- NULL
    sel <- run(a2)
    control_used <- "default"
  }
  case <- list(name = name, dataset = dataset, call = call, type = type,
               steps = if (is.null(steps)) NULL else as.numeric(steps),
               alternative = alternative, yi = as.numeric(yi), vi = as.numeric(vi),
               X = if (is.null(X)) NULL else unname(X))
  if (inherits(sel, "error")) {
    case$error <- conditionMessage(sel)
  } else {
    case$warning <- warn
    case$control_used <- control_used
    case$k <- sel$k
    case$beta <- as.numeric(sel$beta)
    case$se <- na2null(sel$se)
    case$ci_lb <- na2null(sel$ci.lb)
    case$ci_ub <- na2null(sel$ci.ub)
    case$pval <- na2null(sel$pval)
    case$tau2 <- sel$tau2
    case$delta <- as.numeric(sel$delta)
    case$se_delta <- na2null(sel$se.delta)
    case$LRT <- sel$LRT
    case$LRTdf <- sel$LRTdf
    case$LRTp <- sel$LRTp
    case$ll <- sel$ll
    case$ll0 <- sel$ll0
    case$steps_used <- as.numeric(sel$steps)
  }
  out$cases[[length(out$cases) + 1]] <<- case
}

molloy <- escalc(measure = "ZCOR", ri = ri, ni = ni, data = dat.molloy2014)
hack <- dat.hackshaw1998
bcg <- escalc(measure = "RR", ai = tpos, bi = tneg, ci = cpos, di = cneg, data = dat.bcg)

add_case("molloy2014_stepfun_025", "dat.molloy2014", molloy$yi, molloy$vi, "stepfun", 0.025)
add_case("molloy2014_stepfun_025_5", "dat.molloy2014", molloy$yi, molloy$vi, "stepfun", c(0.025, 0.5))
for (ty in c("beta", "halfnorm", "negexp", "power"))
  add_case(paste0("molloy2014_", ty), "dat.molloy2014", molloy$yi, molloy$vi, ty)
# metafor warns "Error when trying to invert Hessian." (delta on its bound 0): SEs are NA
add_case("molloy2014_logistic", "dat.molloy2014", molloy$yi, molloy$vi, "logistic")

add_case("hackshaw1998_stepfun_025", "dat.hackshaw1998", hack$yi, hack$vi, "stepfun", 0.025)
add_case("hackshaw1998_stepfun_3", "dat.hackshaw1998", hack$yi, hack$vi, "stepfun", c(0.025, 0.10, 0.50))
add_case("hackshaw1998_stepfun_two_sided", "dat.hackshaw1998", hack$yi, hack$vi, "stepfun",
         c(0.05, 0.5), alternative = "two.sided")
for (ty in c("beta", "halfnorm", "negexp", "logistic", "power"))
  add_case(paste0("hackshaw1998_", ty), "dat.hackshaw1998", hack$yi, hack$vi, ty)
add_case("hackshaw1998_halfnorm_step", "dat.hackshaw1998", hack$yi, hack$vi, "halfnorm", 0.05)

add_case("bcg_stepfun_less", "dat.bcg", bcg$yi, bcg$vi, "stepfun", 0.05, alternative = "less")
Xb <- cbind(intrcpt = 1, ablat = bcg$ablat)
add_case("bcg_ablat_stepfun_less", "dat.bcg", bcg$yi, bcg$vi, "stepfun", 0.05, alternative = "less",
         X = Xb, mods = Xb[, -1])
add_case("bcg_ablat_negexp_less", "dat.bcg", bcg$yi, bcg$vi, "negexp", alternative = "less",
         X = Xb, mods = Xb[, -1])

# metafor fails: an interval of the step function holds no observed p-value
add_case("hackshaw1998_empty_interval", "dat.hackshaw1998", hack$yi, hack$vi, "stepfun",
         c(0.001, 0.002))

writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null", pretty = TRUE),
           "tests/reference/selection.json")
