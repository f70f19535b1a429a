"""A back-test report as one self-contained HTML page: inline CSS and SVG charts, no script, no request.

It opens offline, from a file or an e-mail attachment, and prints as it shows.
"""

from html import escape
from typing import Any

from config.model import DORMANT
from journey.backtest import percent

BASE, CAND = "#4e79a7", "#f28e2b"
"""Baseline and candidate colours, the same in every chart."""
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}
td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}
"""


def _bars(title: str, labels: list[str], base: list[float | None], cand: list[float | None],
          fmt: str = "{:,.0f}") -> str:
    """Grouped bars, baseline beside candidate, for each label (None: no bar); zero line for negatives."""
    width, height, pad = 900, 260, 40
    values = [v for v in base + cand if v is not None] or [0.0]
    top, bottom = max(max(values), 0.0), min(min(values), 0.0)
    span = (top - bottom) or 1.0
    zero = pad + (height - 2 * pad) * top / span
    step = (width - 2 * pad) / max(len(labels), 1)
    bar = step * 0.35
    parts = [f'<svg role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
             f'<line x1="{pad}" x2="{width - pad}" y1="{zero:.1f}" y2="{zero:.1f}" stroke="#999"/>']
    for i, label in enumerate(labels):
        x = pad + i * step + step * 0.15
        for j, (value, colour) in enumerate(((base[i], BASE), (cand[i], CAND))):
            if value is None:
                continue
            h = (height - 2 * pad) * abs(value) / span
            y = zero - h if value >= 0 else zero
            shown = escape(fmt.format(value))
            parts.append(f'<rect x="{x + j * bar:.1f}" y="{y:.1f}" width="{bar * 0.95:.1f}" height="{h:.1f}" '
                         f'fill="{colour}"><title>{escape(label)}: {shown}</title></rect>')
            # the value itself, above a bar (below one that goes down)
            at = y - 4 if value >= 0 else y + h + 11
            parts.append(f'<text x="{x + (j + 0.475) * bar:.1f}" y="{at:.1f}" font-size="10" '
                         f'text-anchor="middle" fill="#444">{shown}</text>')
        parts.append(f'<text x="{x + bar:.1f}" y="{height - 12}" font-size="12" text-anchor="middle">'
                     f"{escape(label)}</text>")
    parts.append("</svg>")
    return f"<h2>{escape(title)}</h2>" + "".join(parts)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    cells = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def render(report: dict[str, Any], baseline_name: str, candidate_name: str) -> str:
    """The page for ``report`` (``journey.backtest.compare``'s, with its attribution)."""
    base, cand = report["baseline"], report["candidate"]
    stages = list(base["populations"])
    sentiment = ([base["sentiment_by_stage"][s] for s in stages],
                 [cand["sentiment_by_stage"].get(s) for s in stages])
    conversion = list(base["conversion"])

    def in_percent(figures: dict[str, float | None]) -> list[float | None]:
        return [None if (v := figures.get(k)) is None else 100 * v for k in conversion]

    moves = sorted(set(base["transitions"]) | set(cand["transitions"]))
    sections = [
        f"<h1>Back-test: {escape(candidate_name)} against {escape(baseline_name)}</h1>",
        f'<p class="legend"><span style="background:{BASE}"></span>baseline '
        f'<span style="background:{CAND}"></span>candidate</p>',
        f"<p>{report['differing_customers']:,} of {report['customers']:,} customers end in another "
        "stage.</p>",
        _bars("Customers by final stage", stages, [base["populations"][s] for s in stages],
              [cand["populations"].get(s, 0) for s in stages]),
        _bars("Stage-to-stage conversion (%)", conversion,
              in_percent(base["conversion"]), in_percent(cand["conversion"]), "{:.1f}%"),
        _bars("Mean sentiment by final stage", stages, *sentiment, "{:+.3f}"),
        "<h2>Where customers end up differently</h2>",
        _table(["baseline stage", "candidate stage", "customers", "for example"],
               [[d["baseline"], d["candidate"], f"{d['customers']:,}", ", ".join(d["examples"])]
                for d in report["differences"]]),
        "<h2>What the differing customers did</h2>",
        _table(["touchpoint or channel", "share of their events", "share of all events", "lift"],
               [[a["name"], percent(a["share"]), percent(a["share_all"]), f"{a['lift']:.2f}"]
                for a in report.get("attribution", [])]),
        "<h2>Transitions between stages</h2>",
        _table(["from > to", "baseline", "candidate"],
               [[m, f"{base['transitions'].get(m, 0):,}", f"{cand['transitions'].get(m, 0):,}"]
                for m in moves]),
        "<h2>Sessions and dormancy</h2>",
        _table(["", "baseline", "candidate"],
               [["sessions", f"{base['sessions']:,}", f"{cand['sessions']:,}"],
                ["converted sessions", f"{base['converted_sessions']:,}", f"{cand['converted_sessions']:,}"],
                ["dormant customers", f"{base['populations'][DORMANT]:,}",
                 f"{cand['populations'][DORMANT]:,}"]]),
    ]
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>journey-stream back-test'
            f"</title><style>{STYLE}</style></head><body>{''.join(sections)}</body></html>")
