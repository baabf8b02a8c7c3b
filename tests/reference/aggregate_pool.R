# Reference values for `metaalliance pool --aggregate COL --rho R` (one composite per cluster,
# then a random-effects model of the composites), the explorer's working model "one composite
# per sample". Computed with R's metafor:
#   agg <- aggregate(escalc(measure = "GEN", yi, vi), cluster = cluster, struct = "CS", rho = rho)
#   res <- rma(yi, vi, data = agg, method = "REML")     (metafor's default control)
#   predict(res)
#
# Run from the repository root:   Rscript tests/reference/aggregate_pool.R
# Writes tests/reference/aggregate_pool.json (inputs at 17 significant digits, results, R and
# package versions); tests/test_explorer.py reads only that file.
#
# Dataset (package metadat): dat.assink2016 (SMD; Assink et al., 2016), cluster = study,
# aggregated with rho = 0.6 and rho = 0.3; and dat.molloy2014 (correlations, Fisher z) with
# clusters of consecutive pairs of studies, rho = 0.5 (the explorer's default), to exercise ZCOR.

suppressPackageStartupMessages({
  library(metafor)
  library(jsonlite)
})

case <- function(name, yi, vi, cluster, rho, measure) {
  d <- escalc(measure = "GEN", yi = yi, vi = vi)
  d$cluster <- cluster
  agg <- aggregate(d, cluster = cluster, struct = "CS", rho = rho)
  res <- rma(yi, vi, data = agg, method = "REML")
  p <- predict(res)
  list(name = name, rho = rho, measure = measure,
       call = sprintf('rma(yi, vi, data = aggregate(escalc("GEN", yi, vi), cluster, struct = "CS", rho = %s))', rho),
       yi = as.numeric(yi), vi = as.numeric(vi), cluster = as.character(cluster),
       k = res$k, estimate = as.numeric(coef(res)), se = res$se, ci_lower = res$ci.lb,
       ci_upper = res$ci.ub, pi_lower = p$pi.lb, pi_upper = p$pi.ub, tau2 = res$tau2,
       i2 = res$I2, q = res$QE)
}

a <- dat.assink2016
m <- escalc(measure = "ZCOR", ri = ri, ni = ni, data = dat.molloy2014)
cases <- list(
  case("assink2016_rho0.6", a$yi, a$vi, a$study, 0.6, "generic"),
  case("assink2016_rho0.3", a$yi, a$vi, a$study, 0.3, "generic"),
  case("molloy2014_pairs_rho0.5", m$yi, m$vi, (seq_len(nrow(m)) + 1) %/% 2, 0.5, "ZCOR")
)
out <- list(
  r_version = R.version.string,
  metafor_version = as.character(packageVersion("metafor")),
  metadat_version = as.character(packageVersion("metadat")),
  cases = cases
)
writeLines(toJSON(out, digits = I(17), auto_unbox = TRUE, pretty = TRUE),
           "tests/reference/aggregate_pool.json")
