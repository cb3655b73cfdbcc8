"""Content-addressed pass cache.

An entry is the output folder of one pass run, stored under the sha256 of canonical JSON of
everything that shapes that output (pass and version, parameters, target, input digest, tool
versions). Layout under the cache root:

    entries/<key>/files/...   the pass output, never modified once stored
    entries/<key>/entry.json  what made it, and sha256 + size of every file
    tmp/<pid>-<random>/       work in progress (same filesystem, renamed into place when complete)
    locks/<key>.lock          one builder per key; others wait, then reuse
    digests.json              memo of file hashes by (path, size, mtime, inode)

Entries appear by rename only, so a crash leaves at most a tmp folder (removed by the next run
once its process is gone), never a partial entry. Failures are never stored.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pipeline.errors import CacheError

ENTRY_VERSION = 1
_KEY = re.compile(r"^[0-9a-f]{64}$")
# Hash memo entries: [size, mtime_ns, inode, sha256].
_Memo = dict[str, list]


def default_root() -> Path:
    """$PIPELINE_CACHE_DIR, else $XDG_CACHE_HOME/model-pipeline, else ~/.cache/model-pipeline."""
    if os.environ.get("PIPELINE_CACHE_DIR"):
        return Path(os.environ["PIPELINE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "model-pipeline"


def canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest_of(data: Any) -> str:
    """sha256 hex of canonical JSON (sorted keys): the cache key function."""
    return hashlib.sha256(canonical(data).encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def crashpoint(name: str) -> None:
    """Die here, as a power cut would, when the tests ask for it (PIPELINE_CRASH_AT=name)."""
    if os.environ.get("PIPELINE_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def manifest_digest(files: dict[str, dict[str, Any]]) -> str:
    """The digest of a folder: sha256 over its sorted {path: sha256} map."""
    return digest_of({rel: meta["sha256"] for rel, meta in files.items()})


@dataclass(frozen=True)
class Entry:
    key: str
    root: Path  # entries/<key>
    record: dict[str, Any]

    @property
    def files_dir(self) -> Path:
        return self.root / "files"

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return self.record["files"]

    @property
    def digest(self) -> str:
        return self.record["output_digest"]

    @property
    def size(self) -> int:
        return sum(f["size"] for f in self.files.values())

    @property
    def last_used(self) -> float:
        try:
            return (self.root / "entry.json").stat().st_mtime
        except OSError:
            return 0.0


class Cache:
    """The pass cache under `root` (shared by every recipe)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root).expanduser() if root else default_root()
        self.entries_dir = self.root / "entries"
        self.tmp_dir = self.root / "tmp"
        self.locks_dir = self.root / "locks"

    def _ensure(self) -> None:
        try:
            for d in (self.entries_dir, self.tmp_dir, self.locks_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(f"cannot use cache folder {self.root}: {e.strerror}; pass --cache-dir or set "
                             "PIPELINE_CACHE_DIR to a writable folder") from None

    # -- reading ---------------------------------------------------------------------------------

    def lookup(self, key: str) -> tuple[Entry | None, str | None]:
        """The entry for `key` if it passes the cheap check (record readable, every file present
        with its recorded size). A damaged entry is dropped; the second value says why."""
        root = self.entries_dir / key
        if not root.is_dir():
            return None, None
        try:
            entry = Entry(key, root, json.loads((root / "entry.json").read_text(encoding="utf-8")))
            for rel, meta in entry.files.items():
                if (entry.files_dir / rel).stat().st_size != meta["size"]:
                    raise ValueError(f"{rel} has the wrong size")
        except (OSError, ValueError, KeyError, TypeError) as e:
            self.remove(key)
            return None, f"cache entry {key[:12]} was damaged ({e}); dropped it"
        os.utime(root / "entry.json")  # least-recently-used order for gc
        return entry, None

    def entries(self) -> list[Entry]:
        found = []
        if self.entries_dir.is_dir():
            for root in sorted(self.entries_dir.iterdir()):
                try:
                    found.append(Entry(root.name, root, json.loads((root / "entry.json").read_text(encoding="utf-8"))))
                except (OSError, ValueError):
                    found.append(Entry(root.name, root, {"files": {}, "output_digest": None, "pass": "?"}))
        return found

    # -- writing ---------------------------------------------------------------------------------

    def workdir(self) -> Path:
        """A fresh folder on the cache's filesystem for a pass to work in."""
        self._ensure()
        self.sweep()
        return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=self.tmp_dir))

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold the lock for `key`: one build of a key at a time; the others wait."""
        self._ensure()
        with open(self.locks_dir / f"{key}.lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def store(self, key: str, output: Path, record: dict[str, Any]) -> Entry:
        """Move `output` (a folder on the cache filesystem) into the cache under `key`, with the
        sha256 and size of every file. Atomic: the entry appears whole or not at all."""
        self._ensure()
        staging = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-store-", dir=self.tmp_dir))
        try:
            os.rename(output, staging / "files")
            files = hash_folder(staging / "files")
            full = {"entry_version": ENTRY_VERSION, "key": key, **record, "files": files,
                    "output_digest": manifest_digest(files), "created": time.time()}
            (staging / "entry.json").write_text(json.dumps(full, indent=1, sort_keys=True), encoding="utf-8")
            crashpoint("cache-store")
            target = self.entries_dir / key
            self.remove(key)  # --force replaces; renamed away first, as readers need not hold the lock
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return Entry(key, target, full)

    def remove(self, key: str) -> bool:
        """Drop an entry. It is renamed away first, so readers never see half of it."""
        root = self.entries_dir / key
        if not root.exists():
            return False
        self._ensure()
        doomed = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-rm-", dir=self.tmp_dir))
        os.rename(root, doomed / key)
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def sweep(self) -> None:
        """Remove tmp folders of processes that no longer run (crashed or killed builds)."""
        if not self.tmp_dir.is_dir():
            return
        for d in self.tmp_dir.iterdir():
            pid = d.name.split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(d, ignore_errors=True)

    # -- maintenance -----------------------------------------------------------------------------

    def verify(self, keys: list[str] | None = None) -> list[str]:
        """Full check: re-hash every file of every entry (or of `keys`). Damaged entries are
        dropped. Returns one line per problem found."""
        problems = []
        for entry in self.entries():
            if keys and entry.key not in keys:
                continue
            with self.lock(entry.key):
                problem = _check_entry(entry)
                if problem:
                    self.remove(entry.key)
                    problems.append(f"{entry.key[:12]} ({entry.record.get('pass', '?')}): {problem}; dropped")
        return problems

    def disk_usage(self, entries: list[Entry] | None = None) -> int:
        """Bytes the entries' files take on disk. A file hard-linked into several entries (the
        evaluate pass links its input's weights into its own entry) counts once."""
        return sum(size for _, size in _inodes(self.entries() if entries is None else entries).values())

    def gc(self, max_size: int) -> tuple[list[Entry], int]:
        """Remove least recently used entries until the cache holds at most `max_size` bytes on
        disk. Returns the removed entries and the bytes that freed (a file another entry still
        links is not freed)."""
        entries = sorted(self.entries(), key=lambda e: e.last_used)
        inodes = _inodes(entries)
        links = {ino: len(users) for ino, (users, _) in inodes.items()}  # entries still holding each file
        total = before = sum(size for _, size in inodes.values())
        removed = []
        for entry in entries:
            if total <= max_size:
                break
            with self.lock(entry.key):
                if self.remove(entry.key):
                    removed.append(entry)
                    for ino, (users, size) in inodes.items():
                        if entry.key in users:
                            links[ino] -= 1
                            if links[ino] == 0:
                                total -= size
        self.sweep()
        return removed, before - total

    def resolve_key(self, prefix: str) -> str:
        """The full key an unambiguous prefix (as `cache ls` prints) stands for."""
        matches = [e.key for e in self.entries() if prefix and e.key.startswith(prefix)]
        if len(matches) != 1:
            raise CacheError(f"{'no' if not matches else 'more than one'} cache entry matches {prefix!r}; "
                             "see `pipeline cache ls`")
        return matches[0]

    # -- source digests --------------------------------------------------------------------------

    def folder_files(self, folder: Path) -> dict[str, dict[str, Any]]:
        """sha256 and size of every file in `folder`, re-reading only files whose (size, mtime,
        inode) changed since the last call, so a multi-GB model is not re-hashed every build."""
        memo_path = self.root / "digests.json"
        try:
            memo: dict[str, _Memo] = json.loads(memo_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            memo = {}
        known = memo.get(str(folder), {})
        files, fresh, changed = {}, {}, False
        for path in _walk(folder):
            st = path.stat()
            rel = path.relative_to(folder).as_posix()
            old = known.get(rel)
            if old and old[:3] == [st.st_size, st.st_mtime_ns, st.st_ino]:
                digest = old[3]
            else:
                digest, changed = sha256_file(path), True
            fresh[rel] = [st.st_size, st.st_mtime_ns, st.st_ino, digest]
            files[rel] = {"sha256": digest, "size": st.st_size}
        if changed or set(known) != set(fresh):
            memo[str(folder)] = fresh
            with contextlib.suppress(OSError, CacheError):
                self._ensure()
                _write_atomic(memo_path, json.dumps(memo))
        return files


def hash_folder(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under `folder`, by POSIX relative path, sorted."""
    return {p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
            for p in _walk(folder)}


def link_tree(src: Path, dst: Path, *, copy_suffixes: tuple[str, ...] = ()) -> None:
    """Lay out `src` at `dst` with hard links (no second copy of the bytes); files whose suffix
    is in `copy_suffixes`, and any the filesystem cannot link, are copied instead."""
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix not in copy_suffixes:
            try:
                os.link(path, target)
                continue
            except OSError:
                pass
        shutil.copyfile(path, target)


def _inodes(entries: list[Entry]) -> dict[tuple[int, int], tuple[set[str], int]]:
    """(device, inode) of every file of `entries` -> (keys of the entries holding it, size)."""
    found: dict[tuple[int, int], tuple[set[str], int]] = {}
    for entry in entries:
        for rel in entry.files:
            try:
                st = (entry.files_dir / rel).stat()
            except OSError:
                continue
            found.setdefault((st.st_dev, st.st_ino), (set(), st.st_size))[0].add(entry.key)
    return found


def _walk(folder: Path) -> list[Path]:
    # Hidden entries (.git, .cache from huggingface downloads) are not part of a model.
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _check_entry(entry: Entry) -> str | None:
    if "files" not in entry.record or not entry.record.get("output_digest"):
        return "entry.json is missing or unreadable"
    for rel, meta in entry.files.items():
        path = entry.files_dir / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != meta["size"]:
            return f"{rel} has size {path.stat().st_size}, expected {meta['size']}"
        if sha256_file(path) != meta["sha256"]:
            return f"{rel} does not match its sha256"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def parse_size(text: str) -> int:
    """'20G', '500M', '1.5T', '1024' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise CacheError(f"--max-size {text!r}: expected a size such as 500M, 20G or 1T")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)


def human(size: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if size < 1024:
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}T"
