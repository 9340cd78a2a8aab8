"""bench_quality's parts (the command is ``benchmarks/bench_quality.py``).

- ``settings``: what every arm shares (the command's flags) and the smoke sizes;
- ``arms``: the arms (a new arm is one entry of ``arms.ARMS``) and one arm's config, on
  ``base.yaml``, the benchmark's own base config;
- ``runner``: runs, resumes or skips arms, between pauses;
- ``records``: finished arms as committed JSON records, exported and imported;
- ``report``: the table, the targets, the plots and the results file, from MLflow only.
"""
