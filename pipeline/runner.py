"""The build, top to bottom: resolve the model, plan the prompt template, run the passes in
order, package the Foundry Local folder, record build.json, swap the folder into place.

Everything is built in a staging folder beside the output and renamed into place at the end, so
a failed build leaves the previous output untouched and never a half-written folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from pipeline.errors import OutputError, PipelineError
from pipeline.recipe import Recipe

BUILD_INFO = "build.json"
BUILD_INFO_VERSION = 1
# Versions that shape the output; recorded in build.json.
TOOLS = ("model-pipeline", "onnxruntime-genai", "onnxruntime", "onnx", "onnx-ir", "transformers",
         "tokenizers", "torch", "huggingface-hub")


@dataclass(frozen=True)
class BuildResult:
    folder: Path
    name: str  # the Foundry Local model Name
    info: dict[str, Any]


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build(recipe: Recipe, output: Path | None = None, *, artifacts_dir: Path = Path("artifacts"),
          log: Callable[[str], None] = stderr_log) -> BuildResult:
    """Build `recipe` into `output` (default artifacts/<name>). On success the folder is replaced
    whole; on failure it is left as it was and the staging folder is removed."""
    from pipeline.packaging.foundry import default_name, package, plan_prompt
    from pipeline.passes import Artifact, Context, get_pass
    from pipeline.source import resolve_source

    out = Path(output) if output is not None else Path(artifacts_dir) / recipe.name
    _check_output(out)
    passes = [(get_pass(p["type"]), p) for p in recipe.passes]  # unknown pass: fail before any work
    steps = len(passes) + 2
    started = time.monotonic()
    log(f"building {recipe.name} -> {out}")

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        t = time.monotonic()
        src = resolve_source(recipe.model, log=lambda m: log(f"      {m}"))
        foundry = recipe.package.get("foundry_local") or {}
        plan = plan_prompt(src.path, foundry.get("prompt_template", "auto"))
        log(f"[1/{steps}] resolve model     {time.monotonic() - t:6.1f}s  {src.source} ({src.kind}"
            f"{', ' + src.commit[:12] if src.commit else ''})")
        for note in plan.notes:
            log(f"      prompt template: {note}")

        artifact = Artifact(src.path, "hf-model")
        records = []
        for i, (registered, config) in enumerate(passes):
            if registered.consumes != artifact.kind:
                raise PipelineError(f"passes[{i}] ({registered.name}) needs a {registered.consumes} input, "
                                    f"but the previous step produced {artifact.kind}")
            workdir = stage / "work" / f"{i}-{registered.name}"
            workdir.mkdir(parents=True)
            ctx = Context(target=recipe.target, model=recipe.model, workdir=workdir,
                          log=lambda m, n=registered.name: log(f"      {n}: {m}"))
            params = {k: v for k, v in config.items() if k != "type"}
            t = time.monotonic()
            artifact = registered.fn(artifact, params, ctx)
            seconds = time.monotonic() - t
            log(f"[{i + 2}/{steps}] {registered.name:<17} {seconds:6.1f}s  "
                + " ".join(f"{k}={v}" for k, v in params.items() if v not in (None, {}, [])))
            records.append({"type": registered.name, "version": registered.version, "params": params,
                            "seconds": round(seconds, 3),
                            "command": _portable(artifact.meta.get("command"), src.path, stage)})

        t = time.monotonic()
        folder = stage / "folder"
        os.rename(artifact.path, folder)
        precision = next((p["precision"] for p in recipe.passes if "precision" in p), "model")
        name = foundry.get("name") or default_name(src.source, precision, recipe.target["execution_provider"])
        package(folder, src.path, name, plan)
        log(f"[{steps}/{steps}] package           {time.monotonic() - t:6.1f}s  Foundry Local name {name}")

        info = {
            "schema_version": BUILD_INFO_VERSION,
            "name": recipe.name,
            "recipe": recipe.data,
            "recipe_path": str(recipe.path) if recipe.path else None,
            "recipe_digest": recipe.digest(),
            "source": src.record(),
            "foundry_local": {"name": name, "prompt_template_origin": plan.origin,
                              "prompt_template_exact": plan.exact, "notes": list(plan.notes)},
            "tools": tool_versions(),
            "passes": records,
            "seconds": round(time.monotonic() - started, 3),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": hash_files(folder),
        }
        (folder / BUILD_INFO).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _swap_into_place(folder, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    size = sum(f["size"] for f in info["files"].values())
    log(f"built {out} ({size / 1e6:.1f} MB) in {time.monotonic() - started:.1f}s")
    return BuildResult(out, name, info)


def hash_files(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under `folder`, by POSIX relative path, sorted."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        files[path.relative_to(folder).as_posix()] = {"sha256": digest.hexdigest(), "size": path.stat().st_size}
    return files


def tool_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    for dist in TOOLS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _check_output(out: Path) -> None:
    """Refuse, before any work, to replace something that is not one of our builds."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"cannot write to {out}: it is a file; remove it or pass another --output")
    if out.is_dir() and any(out.iterdir()) and not (out / BUILD_INFO).is_file():
        raise OutputError(f"cannot write to {out}: it exists and was not made by pipeline (no {BUILD_INFO}); "
                          "delete it or pass another --output")


def _swap_into_place(folder: Path, out: Path) -> None:
    if not out.exists():
        os.rename(folder, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.rename(out, old)
    try:
        os.rename(folder, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _portable(command: list[str] | None, src: Path, stage: Path) -> list[str] | None:
    """The pass's command line without this machine's temporary paths."""
    if not command:
        return None
    swap = {str(src): "<source>", sys.executable: "python"}
    out = []
    for arg in command:
        arg = swap.get(arg, arg)
        if arg.startswith(str(stage)):
            arg = "<work>/" + Path(arg).name
        out.append(arg)
    return out
