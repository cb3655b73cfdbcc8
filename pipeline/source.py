"""Resolve a recipe's `model` to a local Hugging Face folder.

A local folder is used as is. A hub id goes through `huggingface_hub.snapshot_download`, so the
user's HF cache, login, `HF_HUB_OFFLINE=1` and revisions behave as they do everywhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import SourceError

# What the builder reads; everything else in a hub repo (other weight formats, ONNX exports,
# images) would only cost download time.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.py",
                 "README.md", "LICENSE*"]  # the model card and licence, for published model cards
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class ResolvedSource:
    """Where the model's files are, and what exactly was resolved (recorded in build.json)."""

    path: Path
    kind: str  # "local" | "hub"
    source: str
    revision: str | None
    commit: str | None  # the hub commit the revision resolved to

    @property
    def license(self) -> str | None:
        return detect_license(self.path)

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "revision": self.revision, "commit": self.commit,
                "path": str(self.path) if self.kind == "local" else None}


def resolve_source(model: dict[str, Any], *, log=None) -> ResolvedSource:
    """Resolve `model` (a validated recipe's model section) to a folder with config.json."""
    source = model["source"]
    path = Path(source)
    if path.is_absolute():
        if not (path / "config.json").is_file():
            raise SourceError(f"model.source: {path} is not a Hugging Face model folder (no config.json)")
        return ResolvedSource(path, "local", source, None, None)
    return _resolve_hub(source, model.get("revision"), bool(model.get("trust_remote_code")), log)


def _resolve_hub(repo_id: str, revision: str | None, trust_remote_code: bool, log) -> ResolvedSource:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub import errors as hf

    patterns = _HUB_PATTERNS if trust_remote_code else [p for p in _HUB_PATTERNS if p != "*.py"]
    where = f"{repo_id}@{revision or 'main'}"
    if log:
        log(f"resolving {where} through the Hugging Face cache" + (" (offline)" if constants.HF_HUB_OFFLINE else ""))
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
        if not any(folder.glob("*.safetensors")):
            # Older repos ship only PyTorch pickles; fetch them only when there is nothing better.
            folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns + ["*.bin"]))
    except hf.GatedRepoError:
        raise SourceError(f"model.source: {repo_id} is gated; accept its licence on the hub, then `hf auth login` "
                          "(or set HF_TOKEN) and build again") from None
    except hf.RepositoryNotFoundError:
        raise SourceError(f"model.source: {repo_id} was not found on the hub (check the id, or log in if it is private)") from None
    except hf.RevisionNotFoundError:
        raise SourceError(f"model.revision: {revision!r} does not exist in {repo_id}; use a commit, tag or branch of that repo") from None
    except hf.LocalEntryNotFoundError:
        raise SourceError(f"model.source: {where} is not in the Hugging Face cache and the hub cannot be reached "
                          "(HF_HUB_OFFLINE=1 or no network); download it once with `hf download "
                          f"{repo_id}{' --revision ' + revision if revision else ''}` or point model.source at a local folder") from None
    except (hf.HfHubHTTPError, OSError) as e:
        raise SourceError(f"model.source: could not fetch {where}: {e}") from None
    if not (folder / "config.json").is_file():
        raise SourceError(f"model.source: {where} has no config.json; is it a transformers model repo?")
    commit = folder.name if _COMMIT.match(folder.name) else None
    return ResolvedSource(folder, "hub", repo_id, revision, commit)


def detect_license(folder: Path) -> str | None:
    """The model's licence as its card states it (`license:` in README.md's front matter, with
    `license_name` for "other"), else the first line of a LICENSE file; None if neither says."""
    readme = folder / "README.md"
    if readme.is_file():
        text = readme.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            front = text[3:].split("\n---", 1)[0]
            fields = dict(re.findall(r"^(license(?:_name)?):\s*['\"]?([^'\"\n]+?)['\"]?\s*$", front, re.MULTILINE))
            if fields.get("license"):
                if fields["license"] == "other" and fields.get("license_name"):
                    return fields["license_name"]
                return fields["license"]
    for name in ("LICENSE", "LICENSE.txt", "LICENSE.md"):
        path = folder / name
        if path.is_file():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.strip():
                    return line.strip()[:120]
    return None
