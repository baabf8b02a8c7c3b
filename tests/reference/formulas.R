# Reference values for metaalliance/engine/formulas.py (moderator formulas with interactions,
# factor(), I() and centring), computed with R's metafor: rma(yi, vi, mods = formula, data).
#
# Run from the repository root:   Rscript tests/reference/formulas.R
# Writes tests/reference/formulas.json (R and metafor versions recorded). Each case has R's
# formula, the formula metaalliance is given ("py_formula": R's I(x^2) is also accepted, and
# centring is written center(x) where R writes I(x - mean(x))), R's column names, the design
# matrix and rma()'s coefficients, SEs, tau^2 and QM (REML, metafor's default control).
# Dataset: dat.bcg (metadat): log risk ratios; alloc (text: alternate, random, systematic),
# ablat (absolute latitude), year.

suppressPackageStartupMessages({
  library(metafor)
  library(jsonlite)
})

dat <- escalc(measure = "RR", ai = tpos, bi = tneg, ci = cpos, di = cneg, data = dat.bcg)
cases <- list(
  list(r = "~ alloc * ablat", py = "~ alloc * ablat"),
  list(r = "~ alloc:ablat", py = "~ alloc:ablat"),
  list(r = "~ ablat + I(ablat^2)", py = "~ ablat + I(ablat**2)"),
  list(r = "~ ablat + I(ablat^2)", py = "~ ablat + I(ablat^2)"),
  list(r = "~ I(ablat - mean(ablat)) * I(year - mean(year))", py = "~ center(ablat) * center(year)"),
  list(r = "~ factor(alloc) + year", py = "~ C(alloc) + year"),
  list(r = "~ factor(alloc) - 1", py = "~ factor(alloc) - 1")
)
out <- list(generated_by = "tests/reference/formulas.R", R_version = R.version.string,
            metafor = as.character(packageVersion("metafor")),
            metadat = as.character(packageVersion("metadat")),
            data = list(yi = as.numeric(dat$yi), vi = as.numeric(dat$vi), alloc = dat$alloc,
                        ablat = dat$ablat, year = dat$year),
            cases = list())
for (cs in cases) {
  res <- rma(yi, vi, mods = as.formula(cs$r), data = dat)
  X <- model.matrix(res)
  out$cases[[length(out$cases) + 1]] <- list(
    formula = cs$r, py_formula = cs$py, names = colnames(X), X = unname(X),
    beta = as.numeric(res$beta), se = as.numeric(res$se), tau2 = res$tau2, QM = res$QM,
    QMdf = res$QMdf[1])
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/reference/formulas.json")
