"""`make bench`: run every benchmark and write bench/results/REPORT.md (machine, date, exact
commands, every figure, each target met or not) with the PNG charts the benchmarks save.

    .venv/bin/python -m bench.run_all [--long] [--only connect listeners ...]

The convention a benchmark follows to join (README: Benchmarks):
  - it is `bench/bench_<name>.py`, runnable as `python -m bench.bench_<name>`, and exits non-zero
    when it could not measure;
  - optional module-level literals `REPORT_ARGS` (its arguments here; default none) and
    `LONG_ARGS` (added with --long), and `TIMEOUT` (seconds; default 900);
  - it reports through `bench.common.Report` (figures, ratios, `target(...)`, charts), which
    writes `<name>.json` under BENCH_RESULTS_DIR; a benchmark that only prints still joins: its
    output is quoted and any `TARGET met: ...` / `TARGET NOT met: ...` line counts as a target.
Each runs in its own process, one after another (they are CPU heavy; never two at once).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
TARGET_LINE = re.compile(r"^TARGET (met|NOT met): (.+?): (.+)$")


def module_literals(path: Path) -> dict:
    """REPORT_ARGS, LONG_ARGS, TIMEOUT as written at the top level, read without importing."""
    out: dict = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) else None)
        )
        if (
            isinstance(target, ast.Name)
            and target.id in ("REPORT_ARGS", "LONG_ARGS", "TIMEOUT")
            and node.value is not None
        ):
            out[target.id] = ast.literal_eval(node.value)
    return out


def machine() -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    mem = next((int(line.split()[1]) // 1024 for line in meminfo if line.startswith("MemTotal")), 0)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return [
        f"- Machine: {platform.node()}, {platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores, {mem} MiB RAM",
        f"- Python {platform.python_version()}; commit {commit}{' (with uncommitted changes)' if dirty else ''}",
        f"- Load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]


def run(name: str, args: list[str], timeout: float) -> tuple[int, float, str]:
    cmd = [sys.executable, "-m", f"bench.{name}", *args]
    print(f"\n=== {' '.join(['.venv/bin/python', *cmd[1:]])}", flush=True)
    env = {**os.environ, "BENCH_RESULTS_DIR": str(RESULTS), "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    lines: list[str] = []
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line.rstrip("\n"))
            if time.monotonic() - started > timeout:
                raise subprocess.TimeoutExpired(cmd, timeout)
        code = proc.wait(timeout=max(1.0, timeout - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 15)  # its own group: Azurite, emulator and host go too
        proc.wait(30)
        lines.append(f"(stopped after {timeout:.0f} s)")
        code = -1
    return code, time.monotonic() - started, "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--long", action="store_true", help="each benchmark's LONG_ARGS too (the 10-minute listener run)")
    ap.add_argument("--only", nargs="+", help="names without bench_, e.g. connect listeners")
    opts = ap.parse_args()
    header = machine()  # before the old results go: their removal is no change to the code measured
    RESULTS.mkdir(parents=True, exist_ok=True)
    for old in [*RESULTS.glob("*.json"), *RESULTS.glob("*.png")]:
        old.unlink()
    started_at = datetime.now(UTC)
    modules = sorted(p for p in BENCH.glob("bench_*.py"))
    if opts.only:
        modules = [p for p in modules if p.stem.removeprefix("bench_") in opts.only]
    sections, targets, commands = [], [], []
    total = time.monotonic()
    for path in modules:
        literals = module_literals(path)
        args = list(literals.get("REPORT_ARGS", [])) + (list(literals.get("LONG_ARGS", [])) if opts.long else [])
        command = " ".join([".venv/bin/python", "-m", f"bench.{path.stem}", *args])
        commands.append(command)
        code, seconds, output = run(path.stem, args, float(literals.get("TIMEOUT", 900)))
        result_file = RESULTS / f"{path.stem.removeprefix('bench_')}.json"
        data = json.loads(result_file.read_text()) if result_file.exists() else None
        lines = data["lines"] if data else output.splitlines()[-40:]
        found = (
            data["targets"]
            if data
            else [
                {"target": m.group(2), "met": m.group(1) == "met", "figure": m.group(3)}
                for m in map(TARGET_LINE.match, output.splitlines())
                if m
            ]
        )
        targets += [{**t, "bench": path.stem} for t in found]
        status = "ok" if code == 0 else f"FAILED (exit {code})"
        body = [f"## {path.stem}", "", f"`{command}` — {seconds:.0f} s, {status}", "", "```", *lines, "```"]
        if code != 0 and data:
            body += ["", "Last output:", "```", *output.splitlines()[-15:], "```"]
        for chart in data["charts"] if data else []:
            body += ["", f"![{chart}]({chart})"]
        sections.append("\n".join(body))
    elapsed = time.monotonic() - total
    met = sum(t["met"] for t in targets)
    report = [
        "# Benchmark report",
        "",
        f"Written by `make bench{' BENCH_ARGS=--long' if opts.long else ''}` (`bench/run_all.py`) on "
        f"{started_at:%Y-%m-%d %H:%M} UTC in {elapsed / 60:.1f} min.",
        "",
        *header,
        "- The benchmarks are CPU heavy and ran one after another; the machine's 2 cores were shared with "
        "other work (see the load average), so absolute figures move between runs; the ratios are measured "
        "side by side within one run.",
        "",
        "Commands, in order:",
        "",
        "```",
        *commands,
        "```",
        "",
        f"## Targets: {met} of {len(targets)} met",
        "",
        "| Target | Figure | Met | Benchmark |",
        "|---|---|---|---|",
        *[f"| {t['target']} | {t['figure']} | {'yes' if t['met'] else '**no**'} | {t['bench']} |" for t in targets],
        "",
        *sections,
        "",
    ]
    (RESULTS / "REPORT.md").write_text("\n".join(report), encoding="utf-8")
    print(f"\nwrote {RESULTS / 'REPORT.md'}: {met} of {len(targets)} targets met, {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
