# Reference values for metaalliance/multilevel.py (three-level model, cluster-robust inference,
# within-study aggregation), computed with R's metafor and clubSandwich.
#
# Run from the repository root:   Rscript tests/reference/multilevel.R
# Writes tests/reference/multilevel.json; the Python tests read only that file (no R needed).
#
# Every case stores its inputs (yi, vi, cluster, and X for moderator models) at full printed
# precision (15 significant digits), the exact R call, and metafor's results:
#   rma.mv(yi, vi, random = ~ 1 | cluster/finding, method = ...)   three-level model
#   predict(res)                                                   prediction interval
#   metafor FAQ multilevel I^2 (P = W - W X (X'WX)^-1 X'W, W = diag(1/vi))
#   robust(res, cluster = cluster, clubSandwich = TRUE)             CR2 + Satterthwaite df
#   robust(res, cluster = cluster)                                  metafor's default CR1, df = n - p
#   rma.uni(yi, vi, method = "REML") + robust(..., clubSandwich = TRUE)  (rma.uni with
#                                                  control = list(threshold = 1e-12))
#   aggregate(escalc, cluster = cluster, struct = "CS", rho = ...)
# Optimiser: metafor's default nlminb control stops early on flat likelihoods (e.g. sigma2 of
# dat.assink2016 is then 8e-7 relative from the optimum, and its log-likelihood is lower than at
# the optimum). The references are therefore computed with tight control: nlminb with
# rel.tol = x.tol = sing.tol = 1e-14; where that reports non-convergence, optim's BFGS with
# reltol = 1e-15; the control used is stored per case ("control"). metafor optimises
# log(sigma2), so a component whose REML estimate is 0 comes out as ~1e-11, never exactly 0.
#
# Datasets (package metadat):
#   dat.konstantopoulos2011  cluster = district, finding = school (SMD; Konstantopoulos, 2011)
#   dat.assink2016           cluster = study, finding = esid (SMD; Assink et al., 2016)
#   dat.crede2010            cluster = studyid, finding = row within study (r -> Fisher z;
#                            Crede et al., 2010: several samples and criteria per study)
#   dat.molloy2014           one correlation per study (cluster = study): the three-level model
#                            reduces to rma.uni, only sigma2_1 + sigma2_2 is identified
#   simulated_boundary_*     SIMULATED (set.seed below) data whose REML estimate of one
#                            variance component is on the boundary 0

suppressPackageStartupMessages({
  library(metafor)
  library(clubSandwich)
  library(jsonlite)
})

out <- list(
  generated_by = "tests/reference/multilevel.R",
  R_version = R.version.string,
  metafor = as.character(packageVersion("metafor")),
  metadat = as.character(packageVersion("metadat")),
  clubSandwich = as.character(packageVersion("clubSandwich")),
  optimizer = "rma.mv with tight control (see header); per case in 'control'",
  cases = list(),
  univariate_robust = list(),
  aggregate = list()
)

# multilevel I^2 as in the metafor FAQ ("I^2 for multilevel and multivariate models")
faq_i2 <- function(res) {
  W <- diag(1 / res$vi)
  X <- model.matrix(res)
  P <- W - W %*% X %*% solve(t(X) %*% W %*% X) %*% t(X) %*% W
  typical <- (res$k - res$p) / sum(diag(P))
  list(total = 100 * sum(res$sigma2) / (sum(res$sigma2) + typical),
       levels = 100 * res$sigma2 / (sum(res$sigma2) + typical))
}

robust_list <- function(rob) {
  list(estimate = as.vector(rob$beta), se = as.vector(rob$se), t = as.vector(rob$zval),
       df = as.vector(rob$ddf), pvalue = as.vector(rob$pval),
       ci_lower = as.vector(rob$ci.lb), ci_upper = as.vector(rob$ci.ub),
       n_clusters = rob$n, vcov = unname(as.matrix(rob$vb)))
}

fit_case <- function(name, dataset, yi, vi, cluster, finding, method = "REML", test = "z",
                     X = NULL, call) {
  dat <- data.frame(yi = yi, vi = vi, cluster = cluster, finding = finding)
  fit <- function(control) {
    if (is.null(X)) {
      rma.mv(yi, vi, random = ~ 1 | cluster/finding, data = dat, method = method,
             test = test, control = control)
    } else {
      rma.mv(yi, vi, mods = X, intercept = FALSE, random = ~ 1 | cluster/finding,
             data = dat, method = method, test = test, control = control)
    }
  }
  # tightest control that converges (see the header)
  for (ctl in controls) {
    res <- try(fit(ctl), silent = TRUE)
    if (!inherits(res, "try-error")) break
  }
  if (inherits(res, "try-error")) res <- fit(list())
  i2 <- faq_i2(res)
  case <- list(
    dataset = dataset, call = call, method = method, test = test, level = 95,
    control = deparse(res$control, width.cutoff = 500L),
    yi = as.vector(yi), vi = as.vector(vi), cluster = as.character(cluster),
    k = res$k, n_clusters = res$s.nlevels[1], p = res$p,
    estimate = as.vector(res$beta), se = as.vector(res$se), stat = as.vector(res$zval),
    pvalue = as.vector(res$pval), ci_lower = as.vector(res$ci.lb),
    ci_upper = as.vector(res$ci.ub),
    df = if (test == "t") as.vector(res$ddf) else NULL,
    sigma2 = as.vector(res$sigma2),
    loglik = as.numeric(logLik(res)),
    aic = as.numeric(fitstats(res)["AIC:", 1]),
    bic = as.numeric(fitstats(res)["BIC:", 1]),
    aicc = as.numeric(fitstats(res)["AICc:", 1]),
    q = res$QE, q_df = res$k - res$p, q_pvalue = res$QEp,
    i2 = i2$total, i2_levels = as.vector(i2$levels),
    weights = as.vector(weights(res)),
    weights_rowsum = if (is.null(X)) as.vector(weights(res, type = "rowsum")) else NULL,
    vcov = unname(as.matrix(vcov(res)))
  )
  if (is.null(X)) {
    pr <- predict(res)
    case$pi_lower <- pr$pi.lb
    case$pi_upper <- pr$pi.ub
  } else {
    case$X <- unname(as.matrix(X))
    case$coef_names <- colnames(X)
    case$qm <- res$QM
    case$qm_df <- as.vector(res$QMdf)
    case$qm_pvalue <- res$QMp
    # prediction at the first row of the design (the reference category at the intercept)
    x0 <- matrix(c(1, rep(0, ncol(X) - 1)), nrow = 1)
    pr <- predict(res, newmods = x0[, -1, drop = FALSE], intercept = TRUE)
    case$pi_lower <- pr$pi.lb
    case$pi_upper <- pr$pi.ub
  }
  if (method == "REML") {
    case$robust_cr2 <- robust_list(robust(res, cluster = dat$cluster, clubSandwich = TRUE))
    case$robust_cr1 <- robust_list(robust(res, cluster = dat$cluster))
  }
  out$cases[[name]] <<- case
  invisible(res)
}

uni_robust_case <- function(name, dataset, yi, vi, cluster, call) {
  res <- rma.uni(yi, vi, method = "REML", control = uni_control)
  rob <- robust(res, cluster = cluster, clubSandwich = TRUE)
  rob1 <- robust(res, cluster = cluster)
  out$univariate_robust[[name]] <<- list(
    dataset = dataset, call = call, yi = as.vector(yi), vi = as.vector(vi),
    cluster = as.character(cluster), tau2 = res$tau2, estimate = as.vector(res$beta),
    se = as.vector(res$se), robust_cr2 = robust_list(rob), robust_cr1 = robust_list(rob1))
}

aggregate_case <- function(name, dataset, yi, vi, cluster, rho, call) {
  es <- escalc(measure = "GEN", yi = yi, vi = vi, data = data.frame(cluster = cluster))
  agg <- aggregate(es, cluster = cluster, struct = "CS", rho = rho)
  res <- rma.uni(yi, vi, data = agg, method = "REML", control = uni_control)
  out$aggregate[[name]] <<- list(
    dataset = dataset, call = call, rho = rho, yi = as.vector(yi), vi = as.vector(vi),
    cluster = as.character(cluster), agg_cluster = as.character(agg$cluster),
    agg_yi = as.vector(agg$yi), agg_vi = as.vector(agg$vi),
    pooled_estimate = as.vector(res$beta), pooled_se = as.vector(res$se), pooled_tau2 = res$tau2)
}

# rma.uni's REML Fisher scoring stops when tau2 changes by < 1e-5 (absolute) by default;
# the references use threshold = 1e-12 so that tau2 is the optimum to ~1e-10.
uni_control <- list(threshold = 1e-12, maxiter = 1000)

# optimiser controls, tried in this order (the first that converges is used and recorded)
controls <- list(
  list(optimizer = "nlminb", rel.tol = 1e-14, x.tol = 1e-14, sing.tol = 1e-14,
       iter.max = 10000, eval.max = 10000),
  list(optimizer = "optim", optmethod = "BFGS", reltol = 1e-15),
  list())

within_id <- function(cluster) ave(seq_along(cluster), cluster, FUN = seq_along)

# ---- dat.konstantopoulos2011: schools within districts -------------------------------------
d <- dat.konstantopoulos2011
for (m in c("REML", "ML")) for (tt in c("z", "t")) {
  fit_case(paste0("konstantopoulos2011_", m, "_", tt), "dat.konstantopoulos2011",
           d$yi, d$vi, d$district, d$school, method = m, test = tt,
           call = sprintf('rma.mv(yi, vi, random = ~ 1 | district/school, data = dat.konstantopoulos2011, method = "%s", test = "%s")', m, tt))
}
uni_robust_case("konstantopoulos2011", "dat.konstantopoulos2011", d$yi, d$vi, d$district,
                'robust(rma.uni(yi, vi, data = dat.konstantopoulos2011), cluster = district, clubSandwich = TRUE)')
aggregate_case("konstantopoulos2011_rho0.5", "dat.konstantopoulos2011", d$yi, d$vi, d$district, 0.5,
               'aggregate(dat.konstantopoulos2011, cluster = district, struct = "CS", rho = 0.5)')

# ---- dat.assink2016: effect sizes within studies ------------------------------------------
d <- dat.assink2016
for (m in c("REML", "ML")) for (tt in c("z", "t")) {
  fit_case(paste0("assink2016_", m, "_", tt), "dat.assink2016",
           d$yi, d$vi, d$study, d$esid, method = m, test = tt,
           call = sprintf('rma.mv(yi, vi, random = ~ 1 | study/esid, data = dat.assink2016, method = "%s", test = "%s")', m, tt))
}
X <- model.matrix(~ factor(deltype) + year, data = d)
colnames(X) <- c("intrcpt", paste0("deltype", sort(unique(d$deltype))[-1]), "year")
for (tt in c("z", "t")) {
  fit_case(paste0("assink2016_mods_REML_", tt), "dat.assink2016",
           d$yi, d$vi, d$study, d$esid, method = "REML", test = tt, X = X,
           call = sprintf('rma.mv(yi, vi, mods = ~ factor(deltype) + year, random = ~ 1 | study/esid, data = dat.assink2016, test = "%s")', tt))
}
uni_robust_case("assink2016", "dat.assink2016", d$yi, d$vi, d$study,
                'robust(rma.uni(yi, vi, data = dat.assink2016), cluster = study, clubSandwich = TRUE)')
aggregate_case("assink2016_rho0.5", "dat.assink2016", d$yi, d$vi, d$study, 0.5,
               'aggregate(dat.assink2016, cluster = study, struct = "CS", rho = 0.5)')
aggregate_case("assink2016_rho0", "dat.assink2016", d$yi, d$vi, d$study, 0,
               'aggregate(dat.assink2016, cluster = study, struct = "CS", rho = 0)')
aggregate_case("assink2016_rho0.8", "dat.assink2016", d$yi, d$vi, d$study, 0.8,
               'aggregate(dat.assink2016, cluster = study, struct = "CS", rho = 0.8)')

# ---- dat.crede2010: correlations (Fisher z), several samples/criteria per study --------------
d <- escalc(measure = "ZCOR", ri = ri, ni = ni, data = dat.crede2010)
fid <- within_id(d$studyid)  # finding = row within study (some samples report two criteria)
for (m in c("REML", "ML")) for (tt in c("z", "t")) {
  fit_case(paste0("crede2010_", m, "_", tt), "dat.crede2010 (ZCOR)",
           d$yi, d$vi, d$studyid, fid, method = m, test = tt,
           call = sprintf('rma.mv(yi, vi, random = ~ 1 | studyid/finding, data = escalc("ZCOR", ri = ri, ni = ni, data = dat.crede2010), method = "%s", test = "%s")', m, tt))
}
uni_robust_case("crede2010", "dat.crede2010 (ZCOR)", d$yi, d$vi, d$studyid,
                'robust(rma.uni(yi, vi, data = escalc("ZCOR", ri, ni, data = dat.crede2010)), cluster = studyid, clubSandwich = TRUE)')
aggregate_case("crede2010_rho0.5", "dat.crede2010 (ZCOR)", d$yi, d$vi, d$studyid, 0.5,
               'aggregate(escalc("ZCOR", ri, ni, data = dat.crede2010), cluster = studyid, struct = "CS", rho = 0.5)')

# ---- dat.molloy2014: one finding per study (three-level reduces to rma.uni) ---------------
d <- escalc(measure = "ZCOR", ri = ri, ni = ni, data = dat.molloy2014)
cl <- seq_len(nrow(d))
res.mv <- rma.mv(yi, vi, random = ~ 1 | cl/one, data = data.frame(yi = d$yi, vi = d$vi, cl = cl, one = 1),
                 control = controls[[2]])
res.uni <- rma.uni(yi, vi, data = d, method = "REML", control = uni_control)
out$single_finding <- list(
  dataset = "dat.molloy2014 (ZCOR)",
  call = 'rma.mv(yi, vi, random = ~ 1 | study/finding) with one finding per study vs rma.uni(yi, vi, method = "REML")',
  yi = as.vector(d$yi), vi = as.vector(d$vi), cluster = as.character(cl),
  mv_estimate = as.vector(res.mv$beta), mv_se = as.vector(res.mv$se),
  mv_sigma2_sum = sum(res.mv$sigma2), mv_loglik = as.numeric(logLik(res.mv)),
  uni_estimate = as.vector(res.uni$beta), uni_se = as.vector(res.uni$se), uni_tau2 = res.uni$tau2,
  uni_loglik = as.numeric(logLik(res.uni)))

# ---- SIMULATED data with a variance component on the boundary -----------------------------
# Seeded simulation (labelled simulated): 15 clusters of 1-4 findings with Fisher-z effects.
sim <- function(seed, s1, s2) {
  set.seed(seed)
  sizes <- sample(1:4, 15, replace = TRUE)
  cluster <- rep(seq_along(sizes), sizes)
  n <- sample(30:200, length(cluster), replace = TRUE)
  vi <- 1 / (n - 3)
  yi <- 0.25 + rnorm(15, 0, sqrt(s1))[cluster] + rnorm(length(cluster), 0, sqrt(s2)) +
    rnorm(length(cluster), 0, sqrt(vi))
  list(yi = yi, vi = vi, cluster = cluster, finding = within_id(cluster))
}
# seeds chosen (by trying seeds 1, 2, ...) so that REML puts one component at 0
for (spec in list(list(name = "simulated_boundary_within", seed = 2, s1 = 0.04, s2 = 0),
                  list(name = "simulated_boundary_between", seed = 3, s1 = 0, s2 = 0.01))) {
  s <- sim(spec$seed, spec$s1, spec$s2)
  fit_case(spec$name, sprintf("SIMULATED (set.seed(%d), sigma2 = %g, %g)", spec$seed, spec$s1, spec$s2),
           s$yi, s$vi, s$cluster, s$finding, call = "rma.mv(yi, vi, random = ~ 1 | cluster/finding)")
}

json <- toJSON(out, digits = NA, auto_unbox = TRUE, null = "null", pretty = FALSE)
writeLines(json, "tests/reference/multilevel.json")
cat("wrote tests/reference/multilevel.json\n")
for (nm in names(out$cases)) cat(sprintf("%-40s sigma2 = %s  %s\n", nm, paste(signif(out$cases[[nm]]$sigma2, 6), collapse = ", "), out$cases[[nm]]$control))
