"""Mutation score of the modules whose errors are silent (issue #39), measured with mutmut.

    .venv/bin/python scripts/mutation.py                 # every module below
    .venv/bin/python scripts/mutation.py losses secagg   # some of them
    .venv/bin/python scripts/mutation.py --list          # the modules and their tests

mutmut (pinned below) is installed into the running interpreter when it is missing; it is
not part of the test extras. Each module runs in its own scratch copy of the repository
(`--workdir`, default a temporary folder) with a `setup.cfg` naming the file(s) to mutate
and the few in-process test files that exercise them, so a mutant costs seconds. mutmut
runs, for each mutant, only the selected tests that call the mutated function.

The score is killed / (mutants - judged equivalent). Killed counts mutants a test failed on
or timed out on; every other outcome (survived, no test reached it) is a survivor. The
survivors judged equivalent (they cannot change behaviour) are listed, each with its reason,
in `scripts/mutation_equivalent.toml`. An entry judges the change it records in its mutant's
function: mutmut numbers a function's mutants afresh when the function changes, so a
survivor of the same function whose diff adds that line is the same judgement under a new
number. An entry that covers no survivor of its function (its line is gone, or a test now
kills it) is reported as unused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = "mutmut==3.8.1"
EQUIVALENT = ROOT / "scripts" / "mutation_equivalent.toml"
KILLED = {"killed", "timeout", "caught by type check", "segfault"}
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout"}
STATUS.update({24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", 37: "caught by type check", -11: "segfault"})

T = "tests/"
# module -> (files mutated, test files run against them: fast, in-process, not marked slow)
MODULES: dict[str, tuple[list[str], list[str]]] = {
    "losses": (["fedrag/losses/*"], [T + "test_mut_losses.py"]),
    "metrics": (["fedrag/evaluate/metrics.py"], [T + "test_metrics.py", T + "test_mut_evaluate.py"]),
    "stats": (["fedrag/evaluate/stats.py"], [T + "test_metrics.py", T + "test_mut_evaluate.py"]),
    "verdicts": (
        ["fedrag/strategies/verdicts.py"],
        [T + "test_metrics.py", T + "test_mut_evaluate.py", T + "test_compare_pairing.py"],
    ),
    "aggregator": (["fedrag/federation/server/aggregator.py"], [T + "test_values_privacy.py", T + "test_mut_federation.py"]),
    "local_dp": (
        ["fedrag/federation/privacy/local_dp.py"],
        [T + "test_privacy.py", T + "test_values_privacy.py", T + "test_mut_local_dp.py"],
    ),
    "privacy": (["fedrag/federation/privacy/coverage.py"], [T + "test_mut_federation.py"]),
    "secagg": (["fedrag/federation/privacy/secagg.py"], [T + "test_secagg.py", T + "test_mut_secagg.py"]),
    "lr_search": (["fedrag/strategies/lr_search.py"], [T + "test_values_search.py", T + "test_mut_lr_search.py"]),
    "search": (
        ["fedrag/retrieve/search.py", "fedrag/retrieve/sparse.py"],
        [T + "test_values_search.py", T + "test_mut_search.py"],
    ),
    "cost": (["fedrag/train/cost.py"], [T + "test_mut_search.py"]),
}
PYTEST_ARGS = ["-n0", "-p", "no:cacheprovider", "-m", "not slow"]


def ensure_mutmut() -> None:
    try:
        from importlib.metadata import version

        if version("mutmut") == MUTMUT.split("==")[1]:
            return
    except Exception:  # noqa: BLE001 - not installed
        pass
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", MUTMUT], check=True)


def _cfg_list(name: str, values: list[str]) -> str:
    return f"{name}=" + "\n  ".join(values) + "\n"


def prepare(name: str, workdir: Path) -> Path:
    """A fresh scratch copy of the repository for one module, with mutmut's setup.cfg."""
    files, tests = MODULES[name]
    scratch = workdir / name
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("fedrag", "tests"):
        shutil.copytree(ROOT / folder, scratch / folder, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", scratch / "pyproject.toml")
    cfg = "[mutmut]\nsource_paths=fedrag\n" + _cfg_list("only_mutate", files)
    cfg += _cfg_list("pytest_add_cli_args", PYTEST_ARGS) + _cfg_list("pytest_add_cli_args_test_selection", tests)
    (scratch / "setup.cfg").write_text(cfg)
    return scratch


_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
print(json.dumps({n: get_diff_for_mutant(n) for n in sys.argv[1:]}))
"""


def run_module(name: str, workdir: Path, jobs: int) -> dict:
    """Run mutmut for one module; `{mutant: (status, diff or "")}`."""
    scratch = prepare(name, workdir)
    log = scratch / "mutmut.log"
    with log.open("w") as out:
        cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs)]
        rc = subprocess.run(cmd, cwd=scratch, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"mutmut failed for {name} (exit {rc}); see {log}")
    return collect(scratch)


def collect(scratch: Path) -> dict:
    """`{mutant: (status, diff or "")}` from a module's finished scratch copy."""
    status = {}
    for meta in (scratch / "mutants").rglob("*.py.meta"):
        for mutant, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            status[mutant] = STATUS.get(code, f"exit {code}")
    alive = sorted(m for m, s in status.items() if s not in KILLED)
    diffs = {}
    if alive:
        res = subprocess.run([sys.executable, "-c", _DIFFS, *alive], cwd=scratch, capture_output=True, text=True, check=True)
        diffs = json.loads(res.stdout)
    return {m: (s, diffs.get(m, "")) for m, s in status.items()}


def _changed(diff: str) -> list[str]:
    """The lines a mutant adds, or (for a mutant that only deletes) the lines it removes."""
    lines = diff.splitlines()
    added = [line[1:].strip() for line in lines if line.startswith("+") and not line.startswith("+++")]
    return added or [line[1:].strip() for line in lines if line.startswith("-") and not line.startswith("---")]


def score(name: str, results: dict, equivalent: dict) -> dict:
    """The module's row: counts, score, survivors with their diffs, equivalents with reasons."""
    killed = sum(s in KILLED for s, _ in results.values())
    equiv, survivors, used = [], [], set()
    for mutant, (status, diff) in sorted(results.items()):
        if status in KILLED:
            continue
        changed = _changed(diff)
        same_function = [e for e in equivalent.get(_function(mutant), []) if e["change"].strip() in changed]
        entry = next((e for e in same_function if e["mutant"] == mutant), same_function[0] if same_function else None)
        if entry:
            used.add(entry["mutant"])
            equiv.append({"mutant": mutant, "status": status, "change": entry["change"], "reason": entry["reason"]})
            continue
        survivors.append({"mutant": mutant, "status": status, "diff": diff})
    # an entry of a function this run mutated that covers no survivor: its line is gone, or a test now kills it
    functions = {_function(m) for m in results}
    unused = sorted(e["mutant"] for f in functions for e in equivalent.get(f, []) if e["mutant"] not in used)
    total = len(results)
    denom = total - len(equiv)
    return {
        "module": name,
        "files": MODULES[name][0],
        "mutants": total,
        "killed": killed,
        "survived": total - killed,
        "equivalent": len(equiv),
        "score": killed / denom if denom else 1.0,
        "survivors": survivors,
        "equivalents": equiv,
        "unused": unused,
        "results": results,
    }


def rescore(paths: list[Path], equivalent: dict) -> list[dict]:
    """The rows of saved `--json` runs (a later file's module replaces an earlier one's),
    scored again against the current equivalents list."""
    saved = {}
    for path in paths:
        saved.update({row["module"]: row for row in json.loads(path.read_text())})
    return [score(name, {m: tuple(v) for m, v in row["results"].items()}, equivalent) for name, row in saved.items()]


def _function(mutant: str) -> str:
    """`pkg.module.x_func__mutmut_12` -> `pkg.module.x_func`: the mutated function."""
    return mutant.rsplit("__mutmut_", 1)[0]


def load_equivalent() -> dict[str, list[dict]]:
    """The judged equivalents, grouped by the function they were judged in."""
    data = tomllib.loads(EQUIVALENT.read_text()) if EQUIVALENT.exists() else {}
    out: dict[str, list[dict]] = {}
    for e in data.get("equivalent", []):
        out.setdefault(_function(e["mutant"]), []).append(e)
    return out


def report(rows: list[dict]) -> str:
    lines = ["| module | mutants | killed | survived | judged equivalent | score |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['module']} | {r['mutants']} | {r['killed']} | {r['survived']} | {r['equivalent']} | {100 * r['score']:.1f} % |"
        )
    for r in rows:
        for s in r["survivors"]:
            lines += ["", f"survivor {s['mutant']} ({s['status']}):", s["diff"]]
        for m in r["unused"]:
            lines.append(f"unused equivalent entry (no survivor of its function makes its change: delete or re-judge it): {m}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("modules", nargs="*", help=f"default: all of {', '.join(MODULES)}")
    ap.add_argument("--jobs", type=int, default=2, help="mutants run at once (mutmut --max-children)")
    ap.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one, removed afterwards)")
    ap.add_argument("--json", type=Path, help="write the rows, survivors and equivalents here")
    ap.add_argument("--list", action="store_true", help="print the modules, their files and tests")
    ap.add_argument("--collect", action="store_true", help="score the finished runs already in --workdir (run nothing)")
    ap.add_argument("--rescore", type=Path, nargs="+", help="score a saved --json run again (after editing the equivalents list)")
    args = ap.parse_args()
    if args.list:
        for name, (files, tests) in MODULES.items():
            print(f"{name}: {' '.join(files)} <- {' '.join(tests)}")
        return
    unknown = set(args.modules) - set(MODULES)
    if unknown:
        raise SystemExit(f"unknown module(s) {sorted(unknown)}; see --list")
    if args.rescore:
        print(report(rescore(args.rescore, load_equivalent())))
        return
    ensure_mutmut()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fedrag-mutation-"))
    equivalent, rows = load_equivalent(), []
    try:
        for name in args.modules or list(MODULES):
            results = collect(workdir / name) if args.collect else run_module(name, workdir, args.jobs)
            rows.append(score(name, results, equivalent))
            r = rows[-1]
            print(f"{name}: {r['killed']}/{r['mutants'] - r['equivalent']} killed ({100 * r['score']:.1f} %)", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
