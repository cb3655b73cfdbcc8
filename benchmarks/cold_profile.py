"""Where a cold `pipeline build` spends its time, phase by phase, in one process.

    .venv/bin/python benchmarks/cold_profile.py recipes/tiny-qwen2-int4.yaml --output DIR --cache-dir EMPTY

Does what `pipeline build` does (the same imports in the same order, load_recipe, runner.build)
with a clock on each step: imports, recipe loading, the runner's own work before and after the
builder subprocess, the builder subprocess itself, and, afterwards and separately, the pieces
of work the runner does around it (prompt-template derivation, hashing the source and the
output, tool versions). Prints one JSON object on stdout (or --json FILE); the build's own log goes to stderr.
bench_build.py runs this to explain a cold-build overhead; it is also useful on its own.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import ClassVar


class _TimedPopen(subprocess.Popen):
    """subprocess.Popen that records when each child started and when it was reaped."""

    spans: ClassVar[list[dict]] = []

    def __init__(self, args, *rest, **kwargs):
        self._span = {"argv0": [str(a) for a in args[:3]] if isinstance(args, (list, tuple)) else str(args),
                      "start": time.perf_counter(), "end": None}
        _TimedPopen.spans.append(self._span)
        super().__init__(args, *rest, **kwargs)

    def wait(self, timeout=None):
        rc = super().wait(timeout)
        if self._span["end"] is None:
            self._span["end"] = time.perf_counter()
        return rc


def _clock(fn, *args, repeat: int = 3, **kwargs) -> float:
    """Best of `repeat` timings of fn(*args) in seconds (warm: the first call's one-off costs
    show up in the build phases instead)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", type=Path, default=None, help="write the report here (default: stdout)")
    args = parser.parse_args()
    imports: dict[str, float] = {}

    # The imports `pipeline build` makes, in its order: the console script, then the command body.
    t = time.perf_counter()
    import pipeline.cli  # noqa: F401  (click, pipeline.errors)
    imports["pipeline.cli (click)"] = time.perf_counter() - t
    t = time.perf_counter()
    from pipeline.cache import Cache
    imports["pipeline.cache"] = time.perf_counter() - t
    t = time.perf_counter()
    from pipeline.recipe import load_recipe
    imports["pipeline.recipe (yaml)"] = time.perf_counter() - t
    t = time.perf_counter()
    from pipeline import runner
    imports["pipeline.runner"] = time.perf_counter() - t
    t = time.perf_counter()
    # runner.build imports these on entry; importing them here keeps that cost out of "before".
    from pipeline.packaging.foundry import plan_prompt
    from pipeline.passes import get_pass
    from pipeline.source import resolve_source
    get_pass("model-builder")  # loads every pass module
    imports["packaging, passes, source (jinja2)"] = time.perf_counter() - t

    t = time.perf_counter()
    loaded = load_recipe(args.recipe, args.overrides)
    load_s = time.perf_counter() - t

    log_lines: list[tuple[float, str]] = []

    def log(message: str) -> None:
        log_lines.append((time.perf_counter(), message))
        print(message, file=sys.stderr, flush=True)

    subprocess.Popen = _TimedPopen  # the model-builder pass looks it up at call time
    t_build = time.perf_counter()
    result = runner.build(loaded, output=args.output, cache=Cache(args.cache_dir), log=log)
    t_done = time.perf_counter()
    spans = [s for s in _TimedPopen.spans if s["end"] is not None]
    builder = max(spans, key=lambda s: s["end"] - s["start"]) if spans else None

    # The pieces of runner work around the builder, measured on their own (warm).
    from pipeline.cache import hash_folder

    src = resolve_source(loaded.model)
    foundry = loaded.package.get("foundry_local") or {}
    pieces = {
        "plan_prompt (template derivation + check)": _clock(plan_prompt, src.path, foundry.get("prompt_template", "auto")),
        "hash source folder (sha256)": _clock(hash_folder, src.path),
        "hash output folder (sha256)": _clock(hash_folder, result.folder),
        "tool_versions (importlib.metadata)": _clock(runner.tool_versions, runner.TOOLS),
    }
    phases = {
        "python start-up to first line of this script": None,  # measured by bench_build (python -c pass)
        "imports": sum(imports.values()),
        "load_recipe (parse, validate)": load_s,
    }
    if builder:
        phases["runner before the builder (resolve, template, keys, cache set-up)"] = builder["start"] - t_build
        phases["builder subprocess (spawn to reaped)"] = builder["end"] - builder["start"]
        phases["runner after the builder (cache store + hash, package, build.json, swap)"] = t_done - builder["end"]
    else:
        phases["runner.build (no builder ran)"] = t_done - t_build
    report = json.dumps({
        "script_s": time.perf_counter() - T_START,
        "to_build_end_s": t_done - T_START,
        "imports": imports,
        "phases": {k: v for k, v in phases.items() if v is not None},
        "pieces": pieces,
        "builder_command": builder["argv0"] if builder else None,
        "log": [{"t": round(ts - t_build, 4), "line": line} for ts, line in log_lines],
        "ran": list(result.ran),
    }, indent=1)
    if args.json:
        args.json.write_text(report + "\n", encoding="utf-8")
    else:
        print(report)


if __name__ == "__main__":
    main()
