"""The study of `examples/reproduce_findings.py`, one part per module.

- `study`: the settings (`DEFAULTS`, `QUICK`), their checks and the list
  of runs;
- `runs`: one run (train, then measure every checkpoint) and the study
  loop that reuses finished runs;
- `ablations`: the variants of the paper's recipe and their paired
  comparison with the default;
- `stats`: Spearman's correlation, its permutation p-value, the t test;
- `summary`: `findings.json`'s content and the verdicts on the claims;
- `report`: `findings.md` and the plots.

Imported as the top-level package `findings` (the scripts put
`examples/` on `sys.path`), like `example_utils` and `scaffold`.
"""
