# Reference values for metaalliance.engine.uniroot (the port of R's uniroot / R_zeroin2).
#
# Run from the repository root (make reference, or: Rscript tests/reference/uniroot.R); writes
# tests/reference/uniroot.json. Needs R with jsonlite. Tests read only the JSON.
#
# The port must follow R's path step for step (metafor's default PM and confint() stop where
# uniroot(tol = eps^0.25) stops), so roots and iteration counts are compared exactly. The
# functions use + - * / only, evaluated in the same order here and in tests/test_uniroot.py
# (no sum(): R accumulates it in long double), so f() is the same double on both sides.
# Roots are written as "%.17g" strings: jsonlite keeps at most 15 significant digits.

suppressMessages(library(jsonlite))

# a Q-profile-like function: sum w (y - mu)^2 - target with w = 1 / (v + x), a plain loop
yq <- c(0.23, 0.05, 0.41, 0.18, -0.07, 0.33, 0.12, 0.29)
vq <- c(0.012, 0.031, 0.008, 0.02, 0.045, 0.015, 0.025, 0.01)
qfun <- function(x, target) {
  sw <- 0; swy <- 0
  for (i in seq_along(yq)) {
    w <- 1 / (vq[i] + x)
    sw <- sw + w
    swy <- swy + w * yq[i]
  }
  mu <- swy / sw
  s <- 0
  for (i in seq_along(yq)) {
    d <- yq[i] - mu
    s <- s + d * d / (vq[i] + x)
  }
  s - target
}

FUNS <- list(
  cubic = function(x) x * x * x - 2,
  hyperbola = function(x) 1 / (x + 0.01) - 7,
  quintic = function(x) { d <- x - 0.3; d * d * d * d * d },
  linear_small_root = function(x) x - 1e-7,
  rational = function(x) (x - 0.123456) / (1 + x * x),
  q_k1 = function(x) qfun(x, 7),
  q_low = function(x) qfun(x, 1.689869),
  q_near0 = function(x) qfun(x, 8.2),
  q_far = function(x) qfun(x, 0.01),
  root_at_lower = function(x) x,
  root_at_upper = function(x) x - 100)

CASES <- list(
  list(fn = "cubic", lower = 0, upper = 3), list(fn = "cubic", lower = -1, upper = 2),
  list(fn = "hyperbola", lower = 0, upper = 100), list(fn = "quintic", lower = 0, upper = 1),
  list(fn = "linear_small_root", lower = 0, upper = 100),
  list(fn = "rational", lower = 0, upper = 100), list(fn = "rational", lower = -5, upper = 0.5),
  list(fn = "q_k1", lower = 0, upper = 100), list(fn = "q_low", lower = 0, upper = 100),
  list(fn = "q_near0", lower = 0, upper = 100),
  list(fn = "q_far", lower = 0, upper = 100), list(fn = "q_k1", lower = 0, upper = 1340.5),
  list(fn = "root_at_lower", lower = 0, upper = 100),
  list(fn = "root_at_upper", lower = 0, upper = 100))
TOLS <- c(.Machine$double.eps^0.25, 1e-8, 1e-12)
MAXITERS <- c(1000, 100, 3)

out <- list()
for (cs in CASES) for (tol in TOLS) for (mi in MAXITERS) {
  r <- suppressWarnings(uniroot(FUNS[[cs$fn]], c(cs$lower, cs$upper), tol = tol, maxiter = mi))
  out[[length(out) + 1]] <- list(fn = cs$fn, lower = cs$lower, upper = cs$upper, tol = tol,
                                 maxiter = mi, root = sprintf("%.17g", r$root), iter = r$iter,
                                 estim_prec = r$estim.prec)
}

# extendInt (permutest's permci with control extendInt): the interval is widened before the
# search; the root is compared exactly, init.it is the number of widening steps
EXT <- list(
  list(fn = "cubic", lower = 2, upper = 3, ext = "upX"),
  list(fn = "cubic", lower = -1, upper = 0, ext = "upX"),
  list(fn = "cubic", lower = 5, upper = 6, ext = "yes"),
  list(fn = "quintic", lower = 1, upper = 2, ext = "upX"),
  list(fn = "hyperbola", lower = 0, upper = 0.1, ext = "downX"),
  list(fn = "rational", lower = 1, upper = 5, ext = "yes"))
ext <- list()
for (cs in EXT) {
  r <- uniroot(FUNS[[cs$fn]], c(cs$lower, cs$upper), extendInt = cs$ext)
  ext[[length(ext) + 1]] <- list(fn = cs$fn, lower = cs$lower, upper = cs$upper,
                                 extend_int = cs$ext, root = sprintf("%.17g", r$root),
                                 init_it = r$init.it, iter = r$iter)
}

write_json(list(generated_by = "tests/reference/uniroot.R", r_version = R.version.string,
                yq = yq, vq = vq, cases = out, extend = ext),
           file.path("tests", "reference", "uniroot.json"), digits = NA, auto_unbox = TRUE,
           pretty = TRUE)
cat("wrote tests/reference/uniroot.json:", length(out), "cases\n")
