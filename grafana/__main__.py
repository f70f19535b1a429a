"""``python -m grafana [--check]``: write the dashboards and alert rules, or check them.

``--check`` exits 1 and names every committed file that differs from what would be
written, so CI catches a metric or panel changed without regenerating.
"""

import argparse
import sys

from grafana.render import ROOT, outputs


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) every generated file; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m grafana", description="Write the dashboards and rules.")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file is stale")
    check = parser.parse_args(argv).check
    stale = {path: text for path, text in outputs().items()
             if not path.exists() or path.read_text(encoding="utf-8") != text}
    for path, text in stale.items():
        where = path.relative_to(ROOT.parent)
        if check:
            print(f"{where}: stale, run python -m grafana", file=sys.stderr)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {where}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
