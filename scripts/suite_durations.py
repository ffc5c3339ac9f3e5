"""Write tests/durations.json, the order in which the suite starts its tests (longest first).

    .venv/bin/python -m pytest -q --durations=0 | tee /tmp/suite.log
    .venv/bin/python scripts/suite_durations.py /tmp/suite.log

Reads pytest's `--durations` lines (`12.34s call  tests/x.py::test`), adds each test's setup,
call and teardown, and keeps the tests of at least `--min` seconds. tests/conftest.py sorts the
collected tests by these figures; a test that is not listed keeps its place after them.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

LINE = re.compile(r"^\s*([0-9.]+)s (setup|call|teardown)\s+(\S+)")
OUT = Path(__file__).resolve().parents[1] / "tests" / "durations.json"


def durations(log: str) -> dict[str, float]:
    """Seconds per test id (setup + call + teardown) from pytest's `--durations=0` lines."""
    total: dict[str, float] = defaultdict(float)
    for line in log.splitlines():
        if m := LINE.match(line):
            total[m.group(3)] += float(m.group(1))
    return dict(total)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path, help="the output of a pytest run with --durations=0")
    ap.add_argument("--min", type=float, default=5.0, help="keep tests of at least this many seconds")
    args = ap.parse_args()
    kept = {k: round(v, 1) for k, v in sorted(durations(args.log.read_text()).items(), key=lambda kv: -kv[1]) if v >= args.min}
    if not kept:
        raise SystemExit(f"{args.log}: no --durations lines of at least {args.min} s")
    OUT.write_text(json.dumps(kept, indent=1) + "\n")
    print(f"{OUT}: {len(kept)} tests, {sum(kept.values()):.0f} s")


if __name__ == "__main__":
    main()
