"""Grafana dashboards and Prometheus alert rules for the engine, generated from ``operators.metrics``.

Every query names its metrics through the declarations there, so renaming a metric
regenerates every panel and rule that reads it (``python -m grafana``), and
``python -m grafana --check`` fails while the committed files lag behind.
"""
