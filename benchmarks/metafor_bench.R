# Times the issue-6 workloads in R's metafor on the SIMULATED data benchmarks/run.py wrote.
# Not meant to be run by hand (benchmarks/run.py calls it), but it can be:
#
#   Rscript benchmarks/metafor_bench.R DIR REPEATS QUICK
#
# DIR holds bench_k300.csv (yi, vi, instrument, rater, modality, year, study, id) and
# scale_k<K>.csv (yi, vi) files; results go to DIR/metafor.json. Fast items are timed
# REPEATS times after a warm-up call (best elapsed time); long items run once (the issue's
# metafor times are minutes). QUICK = 1 skips the slowest items (permutest, leave1out,
# influence, the k = 5000 fit). Timing: proc.time() elapsed seconds (wall clock), as
# system.time() reports it; fast calls are looped so one measurement lasts >= 0.05 s.
# metafor runs with its defaults (control = list()), as a user would run it. For the agreement
# check, the cheap deterministic items are refitted (untimed) to full precision as in
# tests/reference (metafor stops Fisher scoring at |change| < 1e-5 by default).

suppressPackageStartupMessages({
  library(metafor)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
dir <- args[1]
repeats <- as.integer(args[2])
quick <- identical(args[3], "1")

dat <- read.csv(file.path(dir, "bench_k300.csv"), stringsAsFactors = FALSE)
dat$id <- seq_len(nrow(dat))

elapsed <- function(f, n) {
  t0 <- proc.time()[["elapsed"]]
  for (i in seq_len(n)) f()
  (proc.time()[["elapsed"]] - t0) / n
}

# best of `reps` measurements after one warm-up call; reps = 1: one run, no warm-up
timeit <- function(f, reps) {
  if (reps <= 1) return(list(seconds = elapsed(f, 1), repeats = 1L, inner = 1L))
  t1 <- elapsed(f, 1)                                  # warm-up (and calibration)
  inner <- max(1L, as.integer(ceiling(0.05 / max(t1, 1e-4))))
  best <- Inf
  for (r in seq_len(reps)) best <- min(best, elapsed(f, inner))
  list(seconds = best, repeats = reps, inner = inner)
}

out <- list(metafor = as.character(packageVersion("metafor")), R = R.version.string,
            quick = quick, repeats = repeats, items = list())
ctrl <- list(threshold = 1e-12 * mean(dat$vi), tol = 1e-12, maxiter = 100000)
tight <- list()
add <- function(name, timing, values = list(), note = NULL) {
  item <- c(timing, list(values = values))
  if (!is.null(tight[[name]])) item$values_tight <- tight[[name]]
  if (!is.null(note)) item$note <- note
  out$items[[name]] <<- item
  cat(sprintf("  metafor %-16s %10.4f s\n", name, timing$seconds))
}
skip <- function(name, why) {
  out$items[[name]] <<- list(seconds = NULL, skipped = why)
  cat(sprintf("  metafor %-16s skipped (%s)\n", name, why))
}
num <- function(x) unname(as.numeric(x))

# warm-up: load metafor's code paths once
invisible(rma(yi, vi, data = dat[1:20, ]))

# --- single fits -----------------------------------------------------------------------------
res <- NULL
tm <- timeit(function() res <<- rma(yi, vi, data = dat, method = "REML"), repeats)
res_t <- rma(yi, vi, data = dat, method = "REML", control = ctrl)
tight$re_reml <- list(estimate = num(res_t$beta), tau2 = num(res_t$tau2), se = num(res_t$se))
add("re_reml", tm, list(estimate = num(res$beta), tau2 = num(res$tau2), se = num(res$se)))

mods <- ~ factor(instrument) + factor(rater) + factor(modality) + year
mr <- NULL
tm <- timeit(function() mr <<- rma(yi, vi, mods = mods, data = dat, method = "REML"), repeats)
mr_t <- rma(yi, vi, mods = mods, data = dat, method = "REML", control = ctrl)
tight$metareg_reml <- list(coefficients = num(mr_t$beta), tau2 = num(mr_t$tau2),
                           qm = num(mr_t$QM))
add("metareg_reml", tm, list(coefficients = num(mr$beta), tau2 = num(mr$tau2), qm = num(mr$QM)))

if (quick) {
  skip("permutest_1000", "--quick")
} else {
  set.seed(1)
  add("permutest_1000", timeit(function() permutest(mr, iter = 1000, progbar = FALSE), 1))
}

if (quick) {
  skip("leave1out", "--quick")
  skip("influence", "--quick")
} else {
  l1o_t <- leave1out(res_t)
  tight$leave1out <- list(estimate = num(l1o_t$estimate), tau2 = num(l1o_t$tau2))
  inf_t <- influence(res_t)
  tight$influence <- list(cook_d = num(inf_t$inf$cook.d), tau2_del = num(inf_t$inf$tau2.del))
  l1o <- NULL
  tm <- timeit(function() l1o <<- leave1out(res), 1)
  add("leave1out", tm, list(estimate = num(l1o$estimate), tau2 = num(l1o$tau2)))
  inf <- NULL
  tm <- timeit(function() inf <<- influence(res), 1)
  add("influence", tm, list(cook_d = num(inf$inf$cook.d), tau2_del = num(inf$inf$tau2.del)))
}

ml <- NULL
tm <- timeit(function() ml <<- rma.mv(yi, vi, random = ~ 1 | study/id, data = dat,
                                      method = "REML"), 1)
add("three_level", tm, list(estimate = num(ml$beta), sigma2 = num(ml$sigma2)))

tf_t <- trimfill(res_t, control = ctrl)
tight$trimfill <- list(k0 = num(tf_t$k0), estimate = num(tf_t$beta), tau2 = num(tf_t$tau2))
tf <- NULL
tm <- timeit(function() tf <<- trimfill(res), 1)
add("trimfill", tm, list(k0 = num(tf$k0), estimate = num(tf$beta), tau2 = num(tf$tau2)))

res_dl <- rma(yi, vi, data = dat, method = "DL")
set.seed(1)
gs <- NULL
tm <- timeit(function() gs <<- gosh(res_dl, subsets = 10000, progbar = FALSE), repeats)
add("gosh_dl_10000", tm, list(mean_estimate = mean(gs$res$estimate), mean_i2 = mean(gs$res$I2)))

# --- REML fit as k grows (k^2 matrices in metafor: only up to where it is reasonable) ----------
for (f in sort(list.files(dir, pattern = "^scale_k[0-9]+[.]csv$"))) {
  k <- as.integer(sub("^scale_k([0-9]+)[.]csv$", "\\1", f))
  d <- read.csv(file.path(dir, f))
  name <- paste0("fit_k", k)
  if (k >= 5000 && quick) {
    skip(name, "--quick")
    next
  }
  if (k < 5000) {
    r_t <- rma(yi, vi, data = d, method = "REML",
               control = list(threshold = 1e-12 * mean(d$vi), tol = 1e-12, maxiter = 100000))
    tight[[name]] <- list(estimate = num(r_t$beta), tau2 = num(r_t$tau2))
  }
  r <- NULL
  reps <- if (k >= 1000) 1 else repeats
  tm <- timeit(function() r <<- rma(yi, vi, data = d, method = "REML"), reps)
  add(name, tm, list(estimate = num(r$beta), tau2 = num(r$tau2)))
}

writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null"),
           file.path(dir, "metafor.json"))
