"""Side-by-side timings of metaalliance against R's metafor (``make bench``).

``python -m benchmarks.run`` times the workloads of issue 6 on seeded simulated data
(``benchmarks.data``) and, when ``Rscript`` with metafor is installed, the same workloads in R
(``benchmarks/metafor_bench.R``) on the same data. Results: a table on stdout and
``benchmarks/out/results.json``.
"""
