# Times selmodel(), robu() and the CHE workflow in R on the SIMULATED data written by
# benchmarks/dependence.py (not meant to be run by hand, but it can be):
#   Rscript benchmarks/dependence_bench.R DIR REPEATS
# DIR holds sel_k300.csv (yi, vi) and dep_k1000.csv (yi, vi, cluster, esid); results go to
# DIR/r_dependence.json. Whole-function elapsed time (proc.time), best of REPEATS after a
# warm-up call; defaults as a user would call the functions.
suppressPackageStartupMessages({
  library(metafor); library(robumeta); library(clubSandwich); library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
dir <- args[1]; repeats <- as.integer(args[2])
sel <- read.csv(file.path(dir, "sel_k300.csv"))
dep <- read.csv(file.path(dir, "dep_k1000.csv"))
best <- function(f) {
  f()
  b <- Inf
  for (i in seq_len(repeats)) { t0 <- proc.time()[["elapsed"]]; f(); b <- min(b, proc.time()[["elapsed"]] - t0) }
  b
}
out <- list(R = R.version.string, metafor = as.character(packageVersion("metafor")),
            robumeta = as.character(packageVersion("robumeta")),
            clubSandwich = as.character(packageVersion("clubSandwich")), items = list())
s <- selmodel(rma(yi, vi, data = sel, method = "ML"), type = "stepfun", steps = 0.025)
out$items$selmodel_stepfun_k300 <- list(
  seconds = best(function() selmodel(rma(yi, vi, data = sel, method = "ML"), type = "stepfun",
                                     steps = 0.025)),
  estimate = as.numeric(s$beta), delta = as.numeric(s$delta))
r <- robu(yi ~ 1, data = dep, studynum = cluster, var.eff.size = vi, modelweights = "CORR",
          rho = 0.8, small = TRUE)
out$items$robu_corr_k1000 <- list(
  seconds = best(function() robu(yi ~ 1, data = dep, studynum = cluster, var.eff.size = vi,
                                 modelweights = "CORR", rho = 0.8, small = TRUE)),
  estimate = as.numeric(r$reg_table$b.r), se = as.numeric(r$reg_table$SE))
che <- function() {
  V <- vcalc(vi, cluster = cluster, obs = esid, rho = 0.6, data = dep)
  res <- rma.mv(yi, V, random = ~ 1 | cluster/esid, data = dep)
  robust(res, cluster = cluster, clubSandwich = TRUE)
}
rc <- che()
out$items$che_k1000 <- list(seconds = best(che), estimate = as.numeric(rc$beta),
                            se = as.numeric(rc$se))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA), file.path(dir, "r_dependence.json"))
