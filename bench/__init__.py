"""The performance harness of wecom-bus: ``make bench`` (``python -m bench``).

Modules: ``callbacks`` (pre-built requests and stream entries), ``loadgen`` (the load generator),
``servers``/``usual``/``tencent``/``serve`` (the receivers compared), ``procs`` (processes, CPU
pinning, RSS), ``ingress`` and ``pipeline`` (the measurements), ``profile`` (py-spy on the
ingress), ``report`` (the table and the JSON file).
"""
