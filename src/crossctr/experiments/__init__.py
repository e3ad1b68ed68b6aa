"""Named experiment grids (the paper's tables and figure) run by one generic, resumable runner.

    grid.py     the experiment YAML (methods, tables, seeds, tuning, search) -> run specs with stable keys
    runner.py   trains the specs, one line per finished run in results.jsonl; resumable
    search.py   Optuna search on validation, the same trial budget per method; resumable
    render.py   results.jsonl -> report.md, report.json, figure4.png
    cli.py      `crossctr experiment NAME --dataset D`
    paper.yaml  the full grid of the paper's section 3; smoke.yaml a toy version for tests;
    modern.yaml CNAN-AT against multi-domain models (MMoE, PLE, STAR, ...), every method searched
"""
