# Reference values for metaalliance/engine/multilevel_ci.py: profile-likelihood CIs of the
# variance components of the three-level model, metafor's confint() on rma.mv.
#
# Run from the repository root:   Rscript tests/reference/multilevel_ci.R
# Writes tests/reference/multilevel_ci.json (R and metafor versions recorded). Per case:
#   res <- rma.mv(yi, vi, random = ~ 1 | cluster/finding, method, control = TIGHT)
#   confint(res, control = list(tol = 1e-12))   (metafor's default tol is eps^0.25 ~ 1e-4)
# TIGHT as in multilevel.R (nlminb with rel.tol = x.tol = 1e-14); confint's profile refits
# use the model's control.
suppressPackageStartupMessages({ library(metafor); library(jsonlite) })
TIGHT <- list(optimizer = "nlminb", rel.tol = 1e-14, x.tol = 1e-14, sing.tol = 1e-14,
              iter.max = 10000, eval.max = 10000)
out <- list(generated_by = "tests/reference/multilevel_ci.R", R_version = R.version.string,
            metafor = as.character(packageVersion("metafor")),
            metadat = as.character(packageVersion("metadat")), cases = list())
add <- function(name, yi, vi, cluster, method = "REML", level = 95) {
  finding <- ave(seq_along(yi), cluster, FUN = seq_along)
  res <- rma.mv(yi, vi, random = ~ 1 | cluster/finding, method = method, control = TIGHT)
  ci <- confint(res, control = list(tol = 1e-12), level = level)
  s1 <- ci[[1]]$random[1, ]; s2 <- ci[[2]]$random[1, ]
  out$cases[[length(out$cases) + 1]] <<- list(
    name = name, method = method, level = level, yi = as.numeric(yi), vi = as.numeric(vi),
    cluster = as.character(cluster), sigma2 = as.numeric(res$sigma2),
    sigma2_1 = as.numeric(s1), sigma2_2 = as.numeric(s2))
}
a <- dat.assink2016
k <- dat.konstantopoulos2011
add("assink2016_reml", a$yi, a$vi, a$study)
add("assink2016_ml_90", a$yi, a$vi, a$study, method = "ML", level = 90)
add("konstantopoulos2011_reml", k$yi, k$vi, k$district)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE),
           "tests/reference/multilevel_ci.json")
