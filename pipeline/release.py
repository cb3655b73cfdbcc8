"""Hand a built folder on: install it into Foundry Local's cache, or publish a release (folder +
manifest.json + model card, optionally a .tar.gz, or a Hugging Face repo) that anyone can verify.

Only folders that pass `pipeline check` are installed or published.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from pipeline.cache import hash_folder, sha256_file
from pipeline.errors import PipelineError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class ReleaseError(PipelineError):
    """A folder cannot be installed or published, or a release does not verify."""


def default_foundry_cache() -> Path:
    """Foundry Local's model cache: $FOUNDRY_CACHE_DIR, else ~/.foundry/cache/models."""
    return Path(os.environ.get("FOUNDRY_CACHE_DIR") or Path.home() / ".foundry" / "cache" / "models").expanduser()


def require_checked(folder: Path, runtime: str = "foundry-local") -> dict[str, Any]:
    """build.json of `folder` if it is one of our builds and passes `pipeline check`; else a
    ReleaseError naming every failed check."""
    from pipeline.check import check_folder

    folder = Path(folder)
    info = _read_json(folder / "build.json")
    if info is None:
        raise ReleaseError(f"{folder} has no readable build.json: only folders built by `pipeline build` can be "
                           "installed or published")
    report = check_folder(folder, runtime)
    errors = [f for f in report.findings if f.level == "error"]
    if errors:
        lines = "\n".join(f"  - {f.check}: {f.message}" for f in errors)
        raise ReleaseError(f"{folder} fails `pipeline check --runtime {runtime}`; fix and rebuild first:\n{lines}")
    return info


# -- install -------------------------------------------------------------------------------------

def install(folder: Path, foundry_cache: Path | None = None) -> tuple[Path, str]:
    """Copy `folder` into its own subfolder of Foundry Local's cache with a versioned Name
    (`name:N`, one more than any installed version). Returns the new folder and the Name."""
    folder = Path(folder)
    require_checked(folder)
    root = Path(foundry_cache).expanduser() if foundry_cache else default_foundry_cache()
    info = _read_json(folder / "inference_model.json") or {}
    base = str(info["Name"]).split(":", 1)[0]
    version = 1 + max((v for n, v in _installed_versions(root) if n == base), default=0)
    name = f"{base}:{version}"
    dest = root / f"{base}-{version}"
    root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=root))
    try:
        copy = stage / "model"
        shutil.copytree(folder, copy)
        info["Name"] = name
        _write_json(copy / "inference_model.json", info)
        # Keep the recorded hashes true for the renamed copy, so `pipeline check` still passes.
        build = _read_json(copy / "build.json")
        build["files"]["inference_model.json"] = hash_folder(copy)["inference_model.json"]
        build["installed_as"] = name
        _write_json(copy / "build.json", build)
        os.rename(copy, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return dest, name


def _installed_versions(root: Path):
    """(base name, version) of every model folder under Foundry's cache root, two levels deep
    at most beyond the publisher folders Foundry itself uses."""
    if not root.is_dir():
        return
    for path in root.glob("**/inference_model.json"):
        if len(path.relative_to(root).parts) > 4:
            continue
        name = str((_read_json(path) or {}).get("Name", ""))
        base, _, version = name.partition(":")
        yield base, int(version) if version.isdigit() else 0


# -- publish -------------------------------------------------------------------------------------

def publish(folder: Path, to: str, *, archive: bool = False, force: bool = False) -> list[str]:
    """Write a release of `folder` to `to` (a directory, or hf://org/name). Returns what was
    written (paths or URLs)."""
    folder = Path(folder)
    build = require_checked(folder)
    if to.startswith("hf://"):
        return [_publish_hf(folder, build, to[len("hf://"):])]
    dest = Path(to).expanduser() / build["name"]
    tar_path = dest.with_name(dest.name + ".tar.gz")
    for path in (dest, tar_path) if archive else (dest,):
        if path.exists() and not force:
            raise ReleaseError(f"cannot publish to {path}: it already exists; delete it or pass --force")
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    written = []
    try:
        release = stage / dest.name
        _assemble(folder, build, release)
        if archive:
            tmp_tar = stage / tar_path.name
            with tarfile.open(tmp_tar, "w:gz") as tar:
                tar.add(release, arcname=dest.name)
            (stage / (tar_path.name + ".sha256")).write_text(f"{sha256_file(tmp_tar)}  {tar_path.name}\n")
            os.replace(tmp_tar, tar_path)
            os.replace(stage / (tar_path.name + ".sha256"), tar_path.with_name(tar_path.name + ".sha256"))
            written += [str(tar_path), str(tar_path) + ".sha256"]
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(release, dest)
        written.insert(0, str(dest))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return written


def _assemble(folder: Path, build: dict, release: Path) -> None:
    """The release folder: the build's files, a model card and the manifest of everything."""
    shutil.copytree(folder, release)
    (release / "README.md").write_text(model_card(folder, build), encoding="utf-8")
    files = {rel: meta for rel, meta in hash_folder(release).items() if rel != MANIFEST}
    _write_json(release / MANIFEST, {"manifest_version": MANIFEST_VERSION, "name": build["name"],
                                     "foundry_local_name": build.get("foundry_local", {}).get("name"),
                                     "total_size": sum(f["size"] for f in files.values()), "files": files})


def _publish_hf(folder: Path, build: dict, repo_id: str) -> str:
    """Upload the same release to a Hugging Face model repo (thin: huggingface_hub does the work)."""
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", repo_id):
        raise ReleaseError(f"--to hf://{repo_id}: expected hf://org/name")
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hf

    with tempfile.TemporaryDirectory() as tmp:
        release = Path(tmp) / "release"
        _assemble(folder, build, release)
        api = HfApi()
        try:
            api.create_repo(repo_id, repo_type="model", exist_ok=True)
            api.upload_folder(folder_path=str(release), repo_id=repo_id, repo_type="model",
                              commit_message=f"Release {build['name']} (model-pipeline)")
        except hf.OfflineModeIsEnabled:
            raise ReleaseError("cannot publish to the Hugging Face hub: HF_HUB_OFFLINE is set; unset it and retry") from None
        except (hf.HfHubHTTPError, OSError, ValueError) as e:
            raise ReleaseError(f"upload to hf://{repo_id} failed: {e}; check `hf auth login` and your write access") from None
    return f"https://huggingface.co/{repo_id}"


# -- verify --------------------------------------------------------------------------------------

def verify_release(path: Path) -> list[str]:
    """Problems with a release (a folder with manifest.json, or its .tar.gz); empty when every
    file is present with its recorded size and sha256 and nothing else is there."""
    path = Path(path)
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                with tarfile.open(path, "r:gz") as tar:
                    tar.extractall(tmp, filter="data")
            except (tarfile.TarError, OSError) as e:
                return [f"{path}: not a readable .tar.gz ({e})"]
            roots = [p for p in Path(tmp).iterdir() if p.is_dir()]
            if len(roots) != 1:
                return [f"{path}: expected one release folder inside, found {len(roots)}"]
            return verify_release(roots[0])
    manifest = _read_json(path / MANIFEST) if path.is_dir() else None
    if manifest is None or not isinstance(manifest.get("files"), dict):
        raise ReleaseError(f"{path} is not a release: no readable {MANIFEST} (make one with `pipeline publish`)")
    actual = {rel: meta for rel, meta in hash_folder(path).items() if rel != MANIFEST}
    problems = []
    for rel, meta in manifest["files"].items():
        if rel not in actual:
            problems.append(f"{rel}: missing")
        elif actual[rel]["size"] != meta["size"]:
            problems.append(f"{rel}: size {actual[rel]['size']}, manifest says {meta['size']}")
        elif actual[rel]["sha256"] != meta["sha256"]:
            problems.append(f"{rel}: sha256 does not match the manifest")
    problems += [f"{rel}: not in the manifest" for rel in sorted(set(actual) - set(manifest["files"]))]
    return problems


# -- the model card ------------------------------------------------------------------------------

def model_card(folder: Path, build: dict) -> str:
    """README.md for a release: what it is, where it came from, how it was made, how to use it."""
    source = build.get("source", {})
    name = build.get("foundry_local", {}).get("name") or build["name"]
    recipe = build.get("recipe", {})
    precision = next((p.get("precision") for p in recipe.get("passes", []) if p.get("precision")), None)
    license_ = source.get("license")
    files = {rel: meta for rel, meta in hash_folder(folder).items()}
    total = sum(f["size"] for f in files.values())
    template = (_read_json(folder / "inference_model.json") or {}).get("PromptTemplate", {})
    metrics = _read_json(folder / "metrics.json")
    target = recipe.get("target", {})

    front = ["---", f"license: {_license_id(license_)}"]
    if source.get("kind") == "hub":
        front.append(f"base_model: {source.get('source')}")
    front += ["library_name: onnxruntime-genai", "tags:", "  - onnx", "  - onnxruntime-genai", "  - foundry-local"]
    if precision:
        front.append(f"  - {precision}")
    front.append("---")

    origin = (f"[{source.get('source')}](https://huggingface.co/{source.get('source')})" if source.get("kind") == "hub"
              else f"the local model folder `{source.get('source')}`")
    lines = [*front, "", f"# {name}", "",
             f"{origin} converted to ONNX ({precision or 'unknown precision'}, "
             f"{target.get('device', '?')} / {target.get('execution_provider', '?')} execution provider) "
             "with model-pipeline, packaged for Foundry Local.", "",
             "## Source", "", "| | |", "|---|---|",
             f"| model | {source.get('source')} ({source.get('kind')}) |",
             f"| revision | {source.get('revision') or '-'} |",
             f"| commit | {source.get('commit') or '-'} |",
             f"| content digest | `{source.get('digest', '-')}` |",
             f"| licence | {license_ or 'not stated by the source model: check it before you redistribute'} |", "",
             "## Build", "", "Recipe (as resolved):", "", "```json", json.dumps(recipe, indent=2), "```", "",
             "| pass | parameters | seconds |", "|---|---|---|"]
    for p in build.get("passes", []):
        params = ", ".join(f"{k}={v}" for k, v in p.get("params", {}).items() if v not in (None, {}, []))
        lines.append(f"| {p.get('type')} | {params} | {p.get('seconds', '-')} |")
    lines += ["", "| tool | version |", "|---|---|"]
    lines += [f"| {tool} | {version} |" for tool, version in build.get("tools", {}).items() if version]
    lines += ["", "## Prompt template", "", "`inference_model.json` (derived from the model's own chat template, "
              f"{'exact' if build.get('foundry_local', {}).get('prompt_template_exact') else 'approximate'}):", "",
              "```json", json.dumps(template, indent=2, ensure_ascii=False), "```", ""]
    notes = build.get("foundry_local", {}).get("notes") or []
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    if metrics:
        lines += ["## Metrics", "", "```json", json.dumps(metrics, indent=2), "```", ""]
    lines += ["## Files", "", f"Total size: {total / 1e6:.1f} MB.", "", "| file | bytes | sha256 |", "|---|---|---|"]
    lines += [f"| {rel} | {meta['size']} | `{meta['sha256'][:16]}…` |" for rel, meta in files.items()]
    lines += ["", "## Use with Foundry Local", "", "```sh",
              "pipeline install .            # or copy this folder into a subfolder of ~/.foundry/cache/models",
              f"foundry model run {name}", "```", "",
              "Verify this release: `pipeline verify .` (checks every file against manifest.json).", ""]
    return "\n".join(lines)


def _license_id(license_: str | None) -> str:
    if license_ and re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", license_):
        return license_
    return "other"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
