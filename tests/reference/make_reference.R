# Regenerate every metafor reference file in tests/reference/ (run from the repository root:
# `make reference`, or `Rscript tests/reference/make_reference.R`). Needs R with metafor, metadat,
# jsonlite, clubSandwich and robumeta (che_rve.R). permci.R (exact permutation CIs: thousands of
# permutest() refits) takes ~10 CPU minutes. Each topic script writes its own JSON with R.version.string and the
# package versions; the Python tests read only the JSON, so neither users nor CI need R.
# chdir: univariate.R writes next to itself; the others write from the repository root.
scripts <- list(c("univariate.R", "TRUE"), c("multilevel.R", "FALSE"),
                c("bias_sensitivity.R", "FALSE"), c("reliability.R", "FALSE"),
                c("uniroot.R", "FALSE"), c("aggregate_pool.R", "FALSE"),
                c("selection.R", "FALSE"), c("che_rve.R", "FALSE"),
                c("formulas.R", "FALSE"), c("multilevel_ci.R", "FALSE"),
                c("permci.R", "FALSE"))
for (s in scripts) {
  path <- file.path("tests", "reference", s[1])
  message("running ", path)
  sys.source(path, envir = new.env(), chdir = as.logical(s[2]))
}
