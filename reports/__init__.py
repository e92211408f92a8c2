"""MLflow runs of the ablation sweeps -> paper tables (Markdown, LaTeX, CSV), figures (PNG, PDF)
and a self-contained HTML report. ``python -m reports.build experiment=<name>``; from code,
``reports.build.build(experiment, sweep=parent_run_id)``.

Flow: `tracking` (the only MLflow module) -> `frame` (tidy runs, repeats) -> `tables` and
`figures` (pure functions of the runs frame) -> `document` (report.md, report.html) -> `build`.
"""
