# Reference values for metaalliance/engine/che.py (CHE working model, CR2, HTZ Wald tests) and
# metaalliance/engine/rve.py (robust variance estimation as robumeta), computed with R's
# metafor, clubSandwich and robumeta.
#
# Run from the repository root:   Rscript tests/reference/che_rve.R
# Writes tests/reference/che_rve.json; the Python tests read only that file (no R needed).
#
# CHE (Pustejovsky & Tipton, 2022), per case:
#   V   <- vcalc(vi, cluster = cluster, obs = esid, rho = rho)        constant sampling correlation
#   res <- rma.mv(yi, V, mods = X, intercept = FALSE, random = ~ 1 | cluster/esid,
#                 method = "REML", control = TIGHT)
#   robust(res, cluster = cluster, clubSandwich = TRUE)               CR2 + Satterthwaite df
#   Wald_test(res, constraints = constrain_zero(2:p), vcov = "CR2", cluster = cluster,
#             test = "HTZ")                                           with moderators
# TIGHT (as in multilevel.R): nlminb with rel.tol = x.tol = 1e-14 so that the REML optimum is
# the exact one (metafor's default stops up to ~1e-7 relative from it on flat likelihoods).
#
# RVE (Hedges, Tipton & Johnson, 2010; Tipton, 2015), per case:
#   robu(yi ~ mods, data, studynum = cluster, var.eff.size = vi, modelweights = "CORR" | "HIER",
#        rho = rho, small = TRUE | FALSE)
#   robumeta's sensitivity() is robu() at rho = 0, .2, ..., 1 (stored under "sensitivity").
#
# Datasets (package metadat): dat.assink2016 (cluster = study, esid; SMD; moderators deltype,
# year), dat.konstantopoulos2011 (cluster = district, esid = school; moderator year - 1990),
# dat.molloy2014 (correlations as Fisher z; one per study; moderator meanage).

suppressPackageStartupMessages({
  library(metafor)
  library(clubSandwich)
  library(robumeta)
  library(jsonlite)
})

TIGHT <- list(optimizer = "nlminb", rel.tol = 1e-14, x.tol = 1e-14, sing.tol = 1e-14,
              iter.max = 10000, eval.max = 10000)
out <- list(
  generated_by = "tests/reference/che_rve.R",
  R_version = R.version.string,
  metafor = as.character(packageVersion("metafor")),
  metadat = as.character(packageVersion("metadat")),
  clubSandwich = as.character(packageVersion("clubSandwich")),
  robumeta = as.character(packageVersion("robumeta")),
  control = "nlminb, rel.tol = x.tol = sing.tol = 1e-14",
  che = list(), rve = list()
)

che_case <- function(name, dataset, yi, vi, cluster, esid, X, rho) {
  V <- vcalc(vi, cluster = cluster, obs = esid, rho = rho)
  res <- rma.mv(yi, V, mods = X, intercept = FALSE, random = ~ 1 | cluster/esid,
                method = "REML", control = TIGHT)
  # robust() stops when clubSandwich's Wald test fails (singular CR2 covariance of the slopes,
  # e.g. levels that each sit in one cluster): then the coefficients come from coef_test()
  # (the same CR2 + Satterthwaite numbers) and the case has no "htz" entry
  rob <- tryCatch(robust(res, cluster = cluster, clubSandwich = TRUE), error = function(e) {
    ct <- coef_test(res, vcov = "CR2", cluster = cluster)
    crit <- qt(0.975, ct$df_Satt)
    list(beta = ct$beta, se = ct$SE, ddf = ct$df_Satt, pval = ct$p_Satt,
         ci.lb = ct$beta - crit * ct$SE, ci.ub = ct$beta + crit * ct$SE, zval = ct$tstat,
         failed = conditionMessage(e))
  })
  case <- list(name = name, dataset = dataset, rho = rho, yi = as.numeric(yi),
               vi = as.numeric(vi), cluster = as.character(cluster), X = unname(X),
               names = colnames(X),
               beta = as.numeric(res$beta), sigma2 = as.numeric(res$sigma2),
               se_model = as.numeric(res$se), loglik = as.numeric(logLik(res)),
               robust = list(beta = as.numeric(rob$beta), se = as.numeric(rob$se),
                             df = as.numeric(rob$ddf), pval = as.numeric(rob$pval),
                             ci_lb = as.numeric(rob$ci.lb), ci_ub = as.numeric(rob$ci.ub),
                             tval = as.numeric(rob$zval)))
  if (!is.null(rob$failed)) case$robust_error <- rob$failed
  if (ncol(X) > 1 && is.null(rob$failed)) {
    wt <- Wald_test(res, constraints = constrain_zero(2:ncol(X)), vcov = "CR2",
                    cluster = cluster, test = c("HTZ", "chi-sq"))
    htz <- wt[wt$test == "HTZ", ]
    case$htz <- list(Fstat = htz$Fstat, df_num = htz$df_num, df_denom = htz$df_denom,
                     p_val = htz$p_val, delta = htz$delta,
                     Q = wt[wt$test == "chi-sq", "Fstat"] * (ncol(X) - 1))
  }
  out$che[[length(out$che) + 1]] <<- case
}

robu_run <- function(yi, vi, cluster, X, modelweights, rho, small) {
  d <- data.frame(yi = yi, vi = vi, cluster = cluster, X[, -1, drop = FALSE])
  f <- if (ncol(X) > 1) as.formula(paste("yi ~", paste(colnames(X)[-1], collapse = " + ")))
       else yi ~ 1
  r <- robu(f, data = d, studynum = cluster, var.eff.size = vi, modelweights = modelweights,
            rho = rho, small = small)
  tab <- r$reg_table
  list(b = as.numeric(tab$b.r), se = as.numeric(tab$SE), t = as.numeric(tab$t),
       df = as.numeric(tab$dfs), p = as.numeric(tab$prob), ci_lb = as.numeric(tab$CI.L),
       ci_ub = as.numeric(tab$CI.U), tau2 = as.numeric(r$mod_info$tau.sq),
       omega2 = if (is.null(r$mod_info$omega.sq)) NULL else as.numeric(r$mod_info$omega.sq),
       i2 = if (is.null(r$mod_info$I.2)) NULL else as.numeric(r$mod_info$I.2))
}

rve_case <- function(name, dataset, yi, vi, cluster, X, modelweights, rho = 0.8, small = TRUE) {
  case <- list(name = name, dataset = dataset, modelweights = modelweights, rho = rho,
               small = small, yi = as.numeric(yi), vi = as.numeric(vi),
               cluster = as.character(cluster), X = unname(X), names = colnames(X),
               call = sprintf("robu(yi ~ ..., studynum = cluster, var.eff.size = vi, modelweights = \"%s\", rho = %s, small = %s)",
                              modelweights, rho, small))
  case$result <- robu_run(yi, vi, cluster, X, modelweights, rho, small)
  if (modelweights == "CORR" && small)
    case$sensitivity <- lapply(seq(0, 1, 0.2), function(r) c(list(rho = r),
                               robu_run(yi, vi, cluster, X, "CORR", r, TRUE)))
  out$rve[[length(out$rve) + 1]] <<- case
}

a <- dat.assink2016
Xa1 <- cbind(intrcpt = rep(1, nrow(a)))
Xa2 <- model.matrix(~ factor(deltype) + year, data = a)
colnames(Xa2) <- c("intrcpt", "deltypegeneral", "deltypeovert", "year")
k <- dat.konstantopoulos2011
Xk1 <- cbind(intrcpt = rep(1, nrow(k)))
Xk2 <- cbind(intrcpt = 1, year = k$year - 1990)
m <- escalc(measure = "ZCOR", ri = ri, ni = ni, data = dat.molloy2014)
Xm2 <- cbind(intrcpt = 1, meanage = m$meanage)

che_case("assink2016_che_06", "dat.assink2016", a$yi, a$vi, a$study, a$esid, Xa1, 0.6)
che_case("assink2016_che_06_mods", "dat.assink2016", a$yi, a$vi, a$study, a$esid, Xa2, 0.6)
che_case("assink2016_che_08", "dat.assink2016", a$yi, a$vi, a$study, a$esid, Xa1, 0.8)
che_case("konstantopoulos2011_che_06", "dat.konstantopoulos2011", k$yi, k$vi, k$district,
         k$school, Xk1, 0.6)
che_case("konstantopoulos2011_che_06_year", "dat.konstantopoulos2011", k$yi, k$vi, k$district,
         k$school, Xk2, 0.6)

rve_case("assink2016_corr", "dat.assink2016", a$yi, a$vi, a$study, Xa1, "CORR")
rve_case("assink2016_corr_mods", "dat.assink2016", a$yi, a$vi, a$study, Xa2, "CORR")
rve_case("assink2016_corr_large", "dat.assink2016", a$yi, a$vi, a$study, Xa1, "CORR", small = FALSE)
rve_case("assink2016_hier", "dat.assink2016", a$yi, a$vi, a$study, Xa1, "HIER")
rve_case("assink2016_hier_mods", "dat.assink2016", a$yi, a$vi, a$study, Xa2, "HIER")
rve_case("konstantopoulos2011_corr", "dat.konstantopoulos2011", k$yi, k$vi, k$district, Xk1, "CORR")
rve_case("konstantopoulos2011_corr_year", "dat.konstantopoulos2011", k$yi, k$vi, k$district, Xk2,
         "CORR", rho = 0.5)
rve_case("konstantopoulos2011_hier", "dat.konstantopoulos2011", k$yi, k$vi, k$district, Xk1, "HIER")
rve_case("molloy2014_corr", "dat.molloy2014", m$yi, m$vi, m$authors, Xm2, "CORR")

# Categorical moderators whose levels sit in one cluster each (issue 13: identical CR2 SEs of the
# intercept and of such slopes; clubSandwich agrees, and its HTZ Wald test stops on the singular
# covariance). The curated selection is a snapshot written by
#   metaalliance export --r DIR --cluster sample --mods "~ rater"
# (tests/reference/curated_rater.csv: 19 findings in 12 samples; rater levels 'combined' and
# 'observer' one finding each). dat.bornmann2007: log odds ratios (women vs men, award), cluster
# = study, moderator country (Canada: one study).
cr <- read.csv("tests/reference/curated_rater.csv", stringsAsFactors = FALSE)
Xc <- model.matrix(~ factor(rater), data = cr)
colnames(Xc) <- c("intrcpt", paste0("rater", sort(unique(cr$rater))[-1]))
che_case("curated_rater_che_06", "metaalliance curated (tests/reference/curated_rater.csv)",
         cr$yi, cr$vi, cr$sample, cr$es_id, Xc, 0.6)
rve_case("curated_rater_corr", "metaalliance curated (tests/reference/curated_rater.csv)",
         cr$yi, cr$vi, cr$sample, Xc, "CORR")
b <- escalc(measure = "OR", ai = waward, n1i = wtotal, ci = maward, n2i = mtotal,
            data = dat.bornmann2007)
Xb <- model.matrix(~ factor(country), data = b)
colnames(Xb) <- c("intrcpt", paste0("country", make.names(sort(unique(b$country))[-1])))
che_case("bornmann2007_country_che_06", "dat.bornmann2007", b$yi, b$vi, b$study, b$obs, Xb, 0.6)
rve_case("bornmann2007_country_corr", "dat.bornmann2007", b$yi, b$vi, b$study, Xb, "CORR")

writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null", pretty = TRUE),
           "tests/reference/che_rve.json")
