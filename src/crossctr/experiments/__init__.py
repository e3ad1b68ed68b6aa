"""Named experiment grids (the paper's tables and figure) run by one generic, resumable runner.

grid.py       the experiment YAML (methods, tables, seeds, tuning, search) -> run specs with stable keys
records.py    typed results.jsonl rows (RunRecord), plan.json and report.json
choice.py     a tuned or searched method's chosen settings and the stale runs, read from the records
search.py     Optuna search on validation, the same trial budget per method; resumable
scheduler.py  file-lock claims, the queue that retries what other runners hold, ETA
runner.py     trains the specs, one record per finished run in results.jsonl; resumable
render.py     records -> report.md, report.json, figure4.png (never imports the runner)
cli.py        `crossctr experiment NAME --dataset D`
*.yaml        the grids: paper.yaml the paper's section 3 (its tables' methods and fractions are
              data here, not code); smoke.yaml a toy version for tests; modern.yaml CNAN-AT
              against multi-domain models, every method searched
"""
