"""The few pieces of Grafana's dashboard JSON model the dashboards are made of.

Panels are plain dicts; ``dashboard`` numbers them, lays them out on the 24-column grid
under their section rows and adds the variables every query refers to. ``panel_queries``
reads the queries back out, ready to run against Prometheus without Grafana.
"""

from collections.abc import Sequence
from itertools import count
from typing import Any

from grafana.promql import substitute
from operators.metrics import BUILD_INFO

Json = dict[str, Any]
Target = tuple[str, str]
"""A query and its legend (``{{label}}`` templates name the series)."""

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_COLUMNS = 24
INSTANT_KINDS = {"bargauge", "table"}
"""Panels that show one value per series: they ask for an instant vector, not a range."""
Steps = Sequence[tuple[float | None, str]]
"""Threshold steps: (from value, colour), the first from ``None``."""
NEUTRAL: Steps = ((None, "green"),)
Scale = tuple[float | None, float | None]
"""The axis' (min, max); ``None`` leaves an end to the data."""
AUTO: Scale = (None, None)
FROM_ZERO: Scale = (0, None)


def _field_config(unit: str, thresholds: Steps, custom: Json, scale: Scale) -> Json:
    steps = [{"color": color, "value": value} for value, color in thresholds]
    limits = {key: value for key, value in zip(("min", "max"), scale, strict=True) if value is not None}
    defaults = {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}, "custom": custom, **limits}
    return {"defaults": defaults, "overrides": []}


def _panel(kind: str, title: str, description: str, targets: Sequence[Target], unit: str, options: Json, *,
           w: int = 12, h: int = 8, custom: Json | None = None, thresholds: Steps = NEUTRAL,
           scale: Scale = AUTO, transformations: Sequence[Json] = ()) -> Json:
    """One panel of ``kind``, its targets lettered A, B, ... in order; ``w``/``h`` in grid units."""
    instant = kind in INSTANT_KINDS
    form = "table" if kind == "table" else "time_series"
    return {
        "type": kind, "title": title, "description": description, "datasource": DATASOURCE,
        "gridPos": {"w": w, "h": h},
        "targets": [{"datasource": DATASOURCE, "refId": chr(ord("A") + i), "expr": expr,
                     "legendFormat": legend, "instant": instant, "range": not instant, "format": form}
                    for i, (expr, legend) in enumerate(targets)],
        "fieldConfig": _field_config(unit, thresholds, custom or {}, scale),
        "options": options,
        "transformations": list(transformations),
    }


_LAST = {"calcs": ["lastNotNull"], "fields": "", "values": False}


def timeseries(title: str, description: str, targets: Sequence[Target], unit: str, *,
               stack: bool = False, w: int = 12, scale: Scale = AUTO) -> Json:
    """Lines over time, one per series; ``stack`` for parts of a whole (populations, event mixes)."""
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 25 if stack else 5, "showPoints": "never",
              "spanNulls": False, "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
               "tooltip": {"mode": "multi", "sort": "desc"}}
    return _panel("timeseries", title, description, targets, unit, options, w=w, custom=custom, scale=scale)


def stat(title: str, description: str, target: Target, unit: str, *,
         thresholds: Steps = NEUTRAL, w: int = 4) -> Json:
    """One headline number (the last value) over a sparkline."""
    options = {"reduceOptions": _LAST, "colorMode": "value", "graphMode": "area", "textMode": "auto",
               "justifyMode": "auto", "orientation": "auto"}
    return _panel("stat", title, description, [target], unit, options, w=w, h=4, thresholds=thresholds)


def bargauge(title: str, description: str, targets: Sequence[Target], unit: str, *,
             thresholds: Steps = NEUTRAL, scale: Scale = AUTO) -> Json:
    """One horizontal bar per series, in the order of ``targets`` and then of the result."""
    options = {"reduceOptions": _LAST, "orientation": "horizontal", "displayMode": "gradient",
               "showUnfilled": True, "valueMode": "color", "namePlacement": "left"}
    return _panel("bargauge", title, description, targets, unit, options, thresholds=thresholds, scale=scale)


def table(title: str, description: str, target: Target, unit: str, transformation: Json, *,
          w: int = 12) -> Json:
    """The instant result as rows, reshaped by ``transformation``."""
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]}}
    return _panel("table", title, description, [target], unit, options, w=w, transformations=[transformation])


def _label_values(label: str, series: str) -> Json:
    query = f"label_values({series}, {label})"
    return {"name": label, "label": label, "type": "query", "datasource": DATASOURCE, "definition": query,
            "query": {"query": query, "refId": f"{label}-values"}, "refresh": 2, "sort": 1, "multi": True,
            "includeAll": True, "allValue": ".*", "options": [], "hide": 0, "regex": "",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}}


def variables() -> list[Json]:
    """``datasource``, then ``job`` and ``instance`` (of that job): whatever runs the engine."""
    datasource = {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
                  "current": {}, "options": [], "hide": 0, "refresh": 1, "regex": "",
                  "multi": False, "includeAll": False}
    return [datasource, _label_values("job", BUILD_INFO.name),
            _label_values("instance", f'{BUILD_INFO.name}{{job=~"$job"}}')]


def _layout(sections: Sequence[tuple[str, Sequence[Json]]]) -> list[Json]:
    """A row per section, its panels left to right, wrapping at the grid's width."""
    ids = count(1)
    placed: list[Json] = []
    y = 0
    for title, panels in sections:
        placed.append({"type": "row", "title": title, "id": next(ids), "collapsed": False, "panels": [],
                       "gridPos": {"x": 0, "y": y, "w": GRID_COLUMNS, "h": 1}})
        x, y, line_height = 0, y + 1, 0
        for p in panels:
            w, h = p["gridPos"]["w"], p["gridPos"]["h"]
            if x + w > GRID_COLUMNS:
                x, y, line_height = 0, y + line_height, 0
            placed.append({**p, "id": next(ids), "gridPos": {"x": x, "y": y, "w": w, "h": h}})
            x, line_height = x + w, max(line_height, h)
        y += line_height
    return placed


def dashboard(uid: str, title: str, tag: str, description: str,
              sections: Sequence[tuple[str, Sequence[Json]]]) -> Json:
    """A whole dashboard: the sections' panels, the variables, a link to the other dashboards."""
    return {
        "uid": uid, "title": title, "description": description, "tags": ["journey-stream", tag],
        "editable": True, "graphTooltip": 1, "refresh": "30s", "schemaVersion": 39, "version": 1,
        "time": {"from": "now-1h", "to": "now"}, "timepicker": {}, "timezone": "browser",
        "fiscalYearStartMonth": 0, "liveNow": False, "weekStart": "",
        "annotations": {"list": []},
        "links": [{"title": "journey-stream", "type": "dashboards", "tags": ["journey-stream"],
                   "asDropdown": False, "includeVars": True, "keepTime": True, "targetBlank": False,
                   "icon": "external link"}],
        "templating": {"list": variables()},
        "panels": _layout(sections),
    }


def panel_queries(board: Json) -> list[tuple[str, str]]:
    """(panel title, query) of every target, variables replaced as ``promql.TEST_VALUES`` says."""
    return [(p["title"], substitute(t["expr"])) for p in board["panels"] for t in p.get("targets", ())]
