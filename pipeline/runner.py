"""The build, top to bottom: resolve the model, plan the prompt template, run each pass through
the cache, package the Foundry Local folder, write build.json and build.lock.json, swap the
folder into place.

The folder is assembled in a staging folder beside the output and exchanged with the old one in
one rename, so a build either replaces the folder whole or leaves the old one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
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

from pipeline.cache import Cache, crashpoint, digest_of, hash_folder, link_tree, manifest_digest, sha256_file
from pipeline.errors import LockMismatchError, OutputError, PipelineError
from pipeline.recipe import Recipe

BUILD_INFO = "build.json"
BUILD_LOCK = "build.lock.json"
LOCK_VERSION = 1
# Distributions whose versions shape a pass's output: part of every cache key.
KEY_TOOLS = ("onnxruntime-genai", "onnxruntime", "onnx", "onnx-ir", "transformers", "torch")
# Recorded in build.json as well.
TOOLS = ("model-pipeline", *KEY_TOOLS, "tokenizers", "huggingface-hub")
# Files hard-linked from the cache into the artifact folder: everything but the small text files
# packaging may rewrite, which must never reach the cache through a shared inode.
COPIED_SUFFIXES = (".json", ".jinja", ".txt")


@dataclass(frozen=True)
class BuildResult:
    folder: Path
    name: str  # the Foundry Local model Name
    info: dict[str, Any]
    up_to_date: bool = False
    ran: tuple[str, ...] = ()  # passes that ran (not served from the cache)


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build(recipe: Recipe, output: Path | None = None, *, artifacts_dir: Path = Path("artifacts"),
          cache: Cache | None = None, use_cache: bool = True, force: bool = False,
          locked: bool = False, lock_file: Path | None = None,
          log: Callable[[str], None] = stderr_log) -> BuildResult:
    """Build `recipe` into `output` (default artifacts/<name>).

    Passes whose key is in the cache are not run; `force` reruns them (and replaces their
    entries), `use_cache=False` neither reads nor writes the cache. `locked` holds the build to a
    lock (`lock_file`, default the output's build.lock.json): any difference is refused before
    work starts where it can be known, and after the passes otherwise. A build that would change
    nothing leaves the folder alone."""
    from pipeline.packaging.foundry import adapt_genai_config, default_name, package, plan_prompt
    from pipeline.passes import Artifact, Context, get_pass
    from pipeline.source import resolve_source

    started = time.monotonic()
    cache = cache or Cache()
    out = Path(output) if output is not None else Path(artifacts_dir) / recipe.name
    _check_output(out)
    _recover(out, log)
    if use_cache:
        cache.sweep()  # a killed build's work in the cache's tmp/, even when no pass runs now
    passes = [(get_pass(p["type"]), p) for p in recipe.passes]  # unknown pass: fail before any work
    steps = len(passes) + 2
    lock_path = Path(lock_file) if lock_file else out / BUILD_LOCK
    previous = _read_json(lock_path)
    if locked and previous is None:
        raise LockMismatchError(f"--locked: no readable lock at {lock_path}; build once without --locked and "
                                f"keep its {BUILD_LOCK}")
    log(f"building {recipe.name} -> {out}")

    # 1. Resolve the model and decide the prompt template: cheap, and fails before conversion.
    t = time.monotonic()
    src = resolve_source(recipe.model, log=lambda m: log(f"      {m}"))
    foundry = recipe.package.get("foundry_local") or {}
    plan = plan_prompt(src.path, foundry.get("prompt_template", "auto"),
                       template_family=foundry.get("template_family"))
    precision = next((p["precision"] for p in recipe.passes if "precision" in p), "model")
    name = foundry.get("name") or default_name(src.source, precision, recipe.target["execution_provider"])
    source = _source_record(src, cache if use_cache else None)
    log(f"[1/{steps}] resolve model     {time.monotonic() - t:6.1f}s  {src.source} ({src.kind}"
        f"{', ' + src.commit[:12] if src.commit else ''})")

    # 2. The keys of every pass we can know now; the whole build is a no-op if nothing changed.
    tools = tool_versions(KEY_TOOLS)
    head = {"lock_version": LOCK_VERSION, "name": recipe.name, "recipe_digest": _recipe_digest(recipe, source),
            "source": source, "package": {"name": name, "prompt_template": plan.template,
                                          "prompt_template_origin": plan.origin}}
    planned = _plan_keys(passes, recipe, source["digest"], tools, previous)
    if locked:
        _check_locked(head, planned, previous, len(passes))
    if not force and _up_to_date(head, planned, previous, out, len(passes)):
        log(f"up to date: {out} (nothing changed since the last build; --force rebuilds)")
        return BuildResult(out, name, _read_json(out / BUILD_INFO) or {}, up_to_date=True)

    for note in plan.notes:
        log(f"      prompt template: {note}")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    logdir = cache.root / "logs" if use_cache else Path(tempfile.gettempdir()) / "model-pipeline-logs"
    try:
        # 3. Run the passes, each through the cache.
        artifact = Artifact(src.path, "hf-model")
        input_digest = source["digest"]
        records, ran = [], []
        for i, (registered, config) in enumerate(passes):
            if registered.consumes != artifact.kind:
                raise PipelineError(f"passes[{i}] ({registered.name}) needs a {registered.consumes} input, "
                                    f"but the previous step produced {artifact.kind}")
            params = {k: v for k, v in config.items() if k != "type"}
            parts = _key_parts(registered, params, recipe, input_digest, tools)
            key = digest_of(parts)
            prev_pass = _prev_pass(previous, i)
            t = time.monotonic()

            def run(workdir: Path, registered=registered, params=params) -> Any:
                ctx = Context(target=recipe.target, model=recipe.model, source=src.path,
                              prompt_template=plan.template, workdir=workdir, logdir=logdir,
                              log=lambda m, n=registered.name: log(f"      {n}: {m}"))
                result = registered.fn(artifact, params, ctx)
                crashpoint("pass-ran")
                return result

            entry, why = None, None
            if use_cache:
                if not force:
                    entry, damaged = cache.lookup(key)
                    if damaged:
                        log(f"      warning: {damaged}")
                if entry is None:
                    with cache.lock(key):
                        if not force:  # another build may have made it while we waited
                            entry, _ = cache.lookup(key)
                        if entry is None:
                            why = "--force" if force else _explain(prev_pass, parts, key, source, i)
                            log(f"      {registered.name}: running ({why})")
                            workdir = cache.workdir()
                            try:
                                produced = run(workdir)
                                entry = cache.store(key, produced.path, {
                                    "pass": registered.name, "key_parts": parts,
                                    "command": _portable(produced.meta.get("command"), src.path, workdir)})
                            finally:
                                shutil.rmtree(workdir, ignore_errors=True)
                            ran.append(registered.name)
                artifact = Artifact(entry.files_dir, registered.produces)
                files, output_digest = entry.files, entry.digest
                command = entry.record.get("command")
            else:
                why = "--no-cache"
                log(f"      {registered.name}: running ({why})")
                workdir = stage / "work" / str(i)
                workdir.mkdir(parents=True)
                produced = run(workdir)
                artifact = Artifact(produced.path, registered.produces)
                files = hash_folder(produced.path)
                output_digest = manifest_digest(files)
                command = _portable(produced.meta.get("command"), src.path, workdir)
                ran.append(registered.name)
            seconds = time.monotonic() - t
            log(f"[{i + 2}/{steps}] {registered.name:<17} {seconds:6.1f}s  "
                + ("ran" if why else "cached") + "  "
                + " ".join(f"{k}={v}" for k, v in params.items() if v not in (None, {}, [])))
            records.append({"type": registered.name, "version": registered.version, "key": key,
                            "params": parts["params"], "target": _pass_target(recipe), "input": {"digest": input_digest},
                            "output": {"digest": output_digest, "files": files}, "tools": tools,
                            "_seconds": round(seconds, 3), "_ran": why, "_command": command})
            input_digest = output_digest
        if locked:
            _check_locked_outputs(records, previous)

        # 4. Package: materialise the last output, add Foundry Local's files, record.
        t = time.monotonic()
        folder = stage / "folder"
        _materialise(artifact.path, folder, link=use_cache)
        package(folder, src.path, name, plan)
        adapted = adapt_genai_config(folder)
        if adapted:
            log(f"      genai_config.json: removed {', '.join(adapted)} (unknown to Foundry Local's runtime)")
        log(f"[{steps}/{steps}] package           {time.monotonic() - t:6.1f}s  Foundry Local name {name}")
        final_files = _folder_files(folder, records[-1]["output"]["files"], artifact.path)
        lock = {**head, "passes": [{k: v for k, v in r.items() if not k.startswith("_")} for r in records],
                "files": final_files}
        info = {
            "schema_version": 1,
            "name": recipe.name,
            "recipe": recipe.data,
            "recipe_path": str(recipe.path) if recipe.path else None,
            "recipe_digest": head["recipe_digest"],
            "source": {k: v for k, v in source.items() if k != "files"} | {"path": str(src.path),
                                                                          "license": src.license},
            "foundry_local": {"name": name, "prompt_template_origin": plan.origin,
                              "prompt_template_exact": plan.exact, "notes": list(plan.notes),
                              "genai_config_removed": adapted},
            "tools": tool_versions(TOOLS),
            "passes": [{"type": r["type"], "version": r["version"], "key": r["key"], "params": r["params"],
                        "seconds": r["_seconds"], "ran": r["_ran"] is not None, "reason": r["_ran"],
                        "command": r["_command"]} for r in records],
            "seconds": round(time.monotonic() - started, 3),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": final_files,
        }
        (folder / BUILD_LOCK).write_text(json.dumps(lock, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (folder / BUILD_INFO).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if recipe.data.get("checks"):
            info["checks"] = _quality_gates(folder, recipe.data["checks"], out, log)
            (folder / BUILD_INFO).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if recipe.target.get("runtime"):
            info["check"] = _check_for_runtime(folder, recipe.target["runtime"], log)
            (folder / BUILD_INFO).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        crashpoint("staged")
        _swap_into_place(folder, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    size = sum(f["size"] for f in final_files.values())
    log(f"built {out} ({size / 1e6:.1f} MB) in {time.monotonic() - started:.1f}s")
    return BuildResult(out, name, info, ran=tuple(ran))


def _quality_gates(folder: Path, checks: dict[str, float], out: Path, log) -> list[dict[str, Any]]:
    """Apply the recipe's `checks:` to the evaluate pass's metrics. A failure keeps the build for
    inspection at <output>.rejected and leaves the output as it was."""
    from pipeline.errors import QualityGateError
    from pipeline.evaluate import apply_checks

    metrics = _read_json(folder / "metrics.json") or {}
    results = apply_checks(metrics, checks)
    for r in results:
        log(f"      check {'passed' if r.passed else 'FAILED'}: {r.message}")
    recorded = [r.to_dict() for r in results]
    failed = [r for r in results if not r.passed]
    if failed:
        info = _read_json(folder / BUILD_INFO) or {}
        info["checks"] = recorded
        (folder / BUILD_INFO).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        rejected = out.with_name(out.name + ".rejected")
        if rejected.exists():
            shutil.rmtree(rejected)
        # Without inference_model.json no Foundry Local pointed at artifacts/ lists it as a model.
        os.rename(folder / "inference_model.json", folder / "inference_model.rejected.json")
        os.rename(folder, rejected)
        raise QualityGateError("quality check failed: " + "; ".join(r.message for r in failed)
                               + f". The output was not replaced; the rejected build is in {rejected}")
    return recorded


def _check_for_runtime(folder: Path, runtime: str, log) -> dict[str, Any]:
    """Hold the staged folder to `runtime` (target.runtime) before it replaces the output."""
    from pipeline.check import check_folder
    from pipeline.errors import PackageError

    t = time.monotonic()
    report = check_folder(folder, runtime)
    errors = [f"{f.check}: {f.message}" for f in report.findings if f.level == "error"]
    warnings = [f"{f.check}: {f.message}" for f in report.findings if f.level != "error"]
    for warning in warnings:
        log(f"      check: warning: {warning}")
    if errors:
        raise PackageError(f"the built folder would fail in {runtime}, so the output was left as it was:\n"
                           + "\n".join(f"  - {e}" for e in errors))
    log(f"      check: ok for {runtime} ({len(report.checked)} checks, {time.monotonic() - t:.1f}s)")
    return {"runtime": runtime, "ok": True, "checked": list(report.checked), "warnings": warnings}


# -- keys, locks and reasons ---------------------------------------------------------------------

def _key_parts(registered, params: dict, recipe: Recipe, input_digest: str, tools: dict) -> dict[str, Any]:
    """Everything that shapes a pass's output. Paths are left out: moving a model folder or the
    checkout does not change what the pass makes; files a parameter names count by content."""
    params = dict(params)
    for k in registered.file_params:
        file = params.get(k) or registered.file_defaults.get(k)
        if file:
            params[k] = f"sha256:{sha256_file(Path(file))}"
    return {"pass": registered.name, "version": registered.version, "params": params,
            "target": _pass_target(recipe), "trust_remote_code": bool(recipe.model.get("trust_remote_code")),
            "input": input_digest, "tools": tools}


def _pass_target(recipe: Recipe) -> dict[str, str]:
    # target.runtime only decides what the finished folder is checked against.
    return {k: recipe.target[k] for k in ("device", "execution_provider")}


def _plan_keys(passes, recipe: Recipe, source_digest: str, tools: dict,
               previous: dict | None) -> list[tuple[str, dict] | None]:
    """The key of each pass, as far as it can be known before running: a later pass's input is
    its predecessor's output, known only from the previous lock when the predecessor's key is
    unchanged. None where it cannot be known."""
    keys: list[tuple[str, dict] | None] = []
    input_digest: str | None = source_digest
    for i, (registered, config) in enumerate(passes):
        if input_digest is None:
            keys.append(None)
            continue
        params = {k: v for k, v in config.items() if k != "type"}
        parts = _key_parts(registered, params, recipe, input_digest, tools)
        key = digest_of(parts)
        keys.append((key, parts))
        prev = _prev_pass(previous, i)
        input_digest = prev["output"]["digest"] if prev and prev.get("key") == key else None
    return keys


def _up_to_date(head: dict, planned: list, previous: dict | None, out: Path, n_passes: int) -> bool:
    """The previous lock describes exactly this build and the folder still holds what it lists."""
    if not previous or len(previous.get("passes", [])) != n_passes:
        return False
    if any(previous.get(k) != v for k, v in head.items()):
        return False
    if [p.get("key") for p in previous["passes"]] != [k and k[0] for k in planned]:
        return False
    if _read_json(out / BUILD_LOCK) != previous:
        return False
    try:
        return all((out / rel).stat().st_size == meta["size"] for rel, meta in previous["files"].items())
    except (OSError, KeyError, TypeError):
        return False


def _check_locked(head: dict, planned: list, previous: dict, n_passes: int) -> None:
    problems = []
    if previous.get("source", {}).get("digest") != head["source"]["digest"]:
        problems += _source_changes(previous.get("source", {}), head["source"])
    for k, v in head["package"].items():
        if previous.get("package", {}).get(k) != v:
            problems.append(f"package {k} {_show(previous.get('package', {}).get(k))} -> {_show(v)}")
    prev_passes = previous.get("passes", [])
    if len(prev_passes) != n_passes:
        problems.append(f"the recipe has {n_passes} passes, the lock {len(prev_passes)}")
    for i, planned_key in enumerate(planned):
        if i < len(prev_passes) and planned_key is not None and planned_key[0] != prev_passes[i].get("key"):
            reason = _explain(_prev_pass(previous, i), planned_key[1], planned_key[0], head["source"], i)
            problems.append(f"passes[{i}]: {reason}")
    if problems:
        raise LockMismatchError("--locked: this build would differ from the lock: " + "; ".join(dict.fromkeys(problems))
                                + ". Update the lock deliberately by building without --locked")


def _check_locked_outputs(records: list[dict], previous: dict) -> None:
    for i, (record, prev) in enumerate(zip(records, previous.get("passes", []))):
        if record["output"]["digest"] != prev.get("output", {}).get("digest"):
            raise LockMismatchError(f"--locked: passes[{i}] ({record['type']}) produced different files than the "
                                    "lock records (a non-deterministic tool?); nothing was replaced")


def _explain(prev: dict | None, parts: dict, key: str, source: dict, index: int) -> str:
    """Why a pass runs, compared with the previous lock, cheapest comparisons first."""
    if prev is None:
        return "first build"
    if prev.get("key") == key:
        return "not in the cache"
    reasons = []
    if prev.get("version") != parts["version"]:
        reasons.append(f"{parts['pass']} implementation {prev.get('version')} -> {parts['version']}")
    old_params, new_params = prev.get("params", {}), parts["params"]
    for k in sorted(set(old_params) | set(new_params)):
        if old_params.get(k) != new_params.get(k):
            reasons.append(f"{parts['pass']}: {k} {_show(old_params.get(k))} -> {_show(new_params.get(k))}")
    for k in sorted(set(prev.get("target", {})) | set(parts["target"])):
        if prev.get("target", {}).get(k) != parts["target"].get(k):
            reasons.append(f"target.{k} {prev.get('target', {}).get(k)} -> {parts['target'].get(k)}")
    for k in sorted(set(prev.get("tools", {})) | set(parts["tools"])):
        if prev.get("tools", {}).get(k) != parts["tools"].get(k):
            reasons.append(f"{k} {prev.get('tools', {}).get(k)} -> {parts['tools'].get(k)}")
    if prev.get("input", {}).get("digest") != parts["input"]:
        if index == 0 and source.get("files") is not None and prev.get("_source_files") is not None:
            reasons += _source_changes({"files": prev["_source_files"]}, source)
        else:
            reasons.append("input changed" if index else "input model changed")
    # The one key component a lock's pass record does not spell out.
    return "; ".join(reasons) or "model.trust_remote_code changed"


def _source_changes(old: dict, new: dict) -> list[str]:
    if old.get("kind") == "hub" or new.get("kind") == "hub":
        if old.get("commit") != new.get("commit"):
            return [f"input {new.get('source')} commit {str(old.get('commit'))[:12]} -> {str(new.get('commit'))[:12]}"]
    old_files, new_files = old.get("files") or {}, new.get("files") or {}
    changes = [f"input {rel} changed" for rel in sorted(set(old_files) & set(new_files))
               if old_files[rel]["sha256"] != new_files[rel]["sha256"]]
    changes += [f"input {rel} added" for rel in sorted(set(new_files) - set(old_files))]
    changes += [f"input {rel} removed" for rel in sorted(set(old_files) - set(new_files))]
    return changes or ["input model changed"]


def _prev_pass(previous: dict | None, i: int) -> dict | None:
    if not previous or i >= len(previous.get("passes", [])):
        return None
    prev = dict(previous["passes"][i])
    if i == 0:
        prev["_source_files"] = previous.get("source", {}).get("files")
    return prev


def _show(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _source_record(src, cache: Cache | None) -> dict[str, Any]:
    """The model's identity: a hub commit, or the hash of a local folder's files."""
    record = {"kind": src.kind, "source": src.source if src.kind == "hub" else Path(src.source).name,
              "revision": src.revision, "commit": src.commit}
    if src.kind == "hub" and src.commit:
        record["digest"] = digest_of({"hub": src.source, "commit": src.commit})
        record["files"] = None
    else:
        files = cache.folder_files(src.path) if cache else hash_folder(src.path)
        record["digest"] = manifest_digest(files)
        record["files"] = files
    return record


def _recipe_digest(recipe: Recipe, source: dict) -> str:
    """The recipe's digest with a local source path replaced by its content digest, so the same
    recipe in another checkout has the same digest."""
    data = json.loads(json.dumps(recipe.data))
    if source["kind"] == "local":
        data["model"]["source"] = source["digest"]
    return digest_of(data)


# -- files ---------------------------------------------------------------------------------------

def tool_versions(names=TOOLS) -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": sys.version.split()[0]} if "model-pipeline" in names else {}
    for dist in names:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _folder_files(folder: Path, known: dict[str, dict[str, Any]], known_dir: Path) -> dict[str, dict[str, Any]]:
    """Manifest of the packaged folder, reusing the cache's hashes for files that are hard links
    to (or unchanged copies of) cache files, so multi-GB weights are not hashed twice."""
    from pipeline.cache import sha256_file

    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel in (BUILD_INFO, BUILD_LOCK):
            continue
        src = known_dir / rel
        same = rel in known and src.exists() and os.path.samestat(path.stat(), src.stat())
        files[rel] = known[rel] if same else {"sha256": sha256_file(path), "size": path.stat().st_size}
    return files


def _materialise(src: Path, dst: Path, *, link: bool) -> None:
    """Lay out `src` at `dst`: weights and models hard-linked from the cache (no second copy),
    text files copied; or moved whole when the output was not cached."""
    if link:
        link_tree(src, dst, copy_suffixes=COPIED_SUFFIXES)
    else:
        os.rename(src, dst)


def _check_output(out: Path) -> None:
    """Refuse, before any work, to replace something that is not one of our builds."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"cannot write to {out}: it is a file; remove it or pass another --output")
    if out.is_dir() and any(out.iterdir()) and not (out / BUILD_INFO).is_file():
        raise OutputError(f"cannot write to {out}: it exists and was not made by pipeline (no {BUILD_INFO}); "
                          "delete it or pass another --output")


def _recover(out: Path, log) -> None:
    """Undo what a killed build left beside `out`: restore a folder moved aside mid-swap, and
    remove staging folders of processes that are gone."""
    from pipeline.cache import _alive

    if not out.parent.is_dir():
        return
    for leftover in out.parent.glob(f".{out.name}.*"):
        parts = leftover.name[len(out.name) + 2:].split("-")
        if len(parts) < 2 or parts[0] not in ("partial", "old") or not parts[1].isdigit() or _alive(int(parts[1])):
            continue
        if parts[0] == "old" and not out.exists():
            os.rename(leftover, out)
            log(f"restored {out} from an interrupted build")
        else:
            shutil.rmtree(leftover, ignore_errors=True)


def _swap_into_place(folder: Path, out: Path) -> None:
    """Make `folder` the new `out` in one step where the OS allows (Linux renameat2 EXCHANGE);
    else move the old one aside first (restored by _recover if we die in between)."""
    if not out.exists():
        try:
            os.rename(folder, out)
            return
        except OSError as e:  # another build of this output swapped its folder in first
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    if _exchange(folder, out):
        shutil.rmtree(folder, ignore_errors=True)  # now holds the old build
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.rename(out, old)
    crashpoint("swapping")
    try:
        os.rename(folder, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    if sys.platform != "linux" or os.environ.get("PIPELINE_NO_EXCHANGE"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _portable(command: list[str] | None, src: Path, workdir: Path) -> list[str] | None:
    """The pass's command line without this machine's temporary paths."""
    if not command:
        return None
    swap = {str(src): "<source>", sys.executable: "python"}
    return [swap.get(a, "<work>/" + Path(a).name if a.startswith(str(workdir)) else a) for a in command]
