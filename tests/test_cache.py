"""The pass cache, the build lock and crash safety, proved with real builds of the tiny model.

A cache hit is proved by counting calls of the registered pass function, never by timing. Each
builder-running test uses either the module's shared cache (already holding the default int4
entry, so it costs no conversion) or a private one where the test needs the pass to run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY_MODEL, og_greedy, run_cli, tiny_recipe
from pipeline import runner
from pipeline.cache import Cache, digest_of, hash_folder, link_tree, sha256_file
from pipeline.passes import _REGISTRY, get_pass
from pipeline.recipe import recipe_from_dict

LOCK_KEYS = ["lock_version", "name", "recipe_digest", "source", "package", "passes", "files"]
PASS_KEYS = ["type", "version", "key", "params", "target", "input", "output", "tools"]
CRASHED_NAME = "crashed-int4-generic-cpu"
STEP = re.compile(r"\[2/3\] model-builder\s+[\d.]+s\s+(ran|cached)")


# -- helpers -------------------------------------------------------------------------------------

def recipe(source: Path = TINY_MODEL, **changes):
    """The int4 tiny recipe; `block_size=64` and the like change passes[0], anything else the top."""
    data = tiny_recipe("int4", source)
    for k, v in changes.items():
        if k in ("block_size", "precision", "accuracy_level"):
            data["passes"][0][k] = v
        else:
            data[k] = v
    return recipe_from_dict(data)


def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(tiny_recipe("int4")))
    return path


def build(rec, out: Path, cache: Cache, **kwargs):
    logs: list[str] = []
    result = runner.build(rec, output=out, cache=cache, log=logs.append, **kwargs)
    return result, "\n".join(logs)


def info(folder: Path) -> dict:
    return json.loads((folder / "build.json").read_text())


def lock(folder: Path) -> dict:
    return json.loads((folder / "build.lock.json").read_text())


def pass_record(folder: Path) -> dict:
    return info(folder)["passes"][0]


def entry_file(cache: Cache, folder: Path, rel: str = "model.onnx.data") -> Path:
    return cache.entries_dir / lock(folder)["passes"][0]["key"] / "files" / rel


def assert_good_folder(folder: Path) -> None:
    """build.json and build.lock.json list exactly the files there are, with their hashes, and
    the folder loads and generates in onnxruntime-genai."""
    actual = hash_folder(folder)
    del actual["build.json"], actual["build.lock.json"]
    assert info(folder)["files"] == actual
    assert lock(folder)["files"] == actual
    assert len(og_greedy(folder, [1, 2, 3, 4], 4)) == 4


def assert_clean_cache(cache: Cache) -> None:
    """No partial entry: every entry has its record and passes the full check; no work left over."""
    for root in cache.entries_dir.iterdir():
        assert (root / "entry.json").is_file(), f"partial entry {root.name}"
    assert cache.verify() == []
    assert list(cache.tmp_dir.iterdir()) == []


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, mtime_ns, size) of the folder and of everything in it."""
    paths = [folder, *sorted(folder.rglob("*"))]
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size) for p in paths}


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Cache:
    return Cache(tmp_path_factory.mktemp("shared-cache"))


@pytest.fixture(scope="module")
def baseline(shared_cache, tmp_path_factory) -> Path:
    """The default int4 build, made once: it puts the entry every cheap test reuses in the cache."""
    out = tmp_path_factory.mktemp("baseline") / "out"
    result, _ = build(recipe(), out, shared_cache)
    assert result.ran == ("model-builder",)
    return out


@pytest.fixture
def calls(monkeypatch) -> list[dict]:
    """Every call of the model-builder pass function, in this process (it still does the work)."""
    real = get_pass("model-builder")
    seen: list[dict] = []

    def counting(artifact, params, ctx):
        seen.append(params)
        return real.fn(artifact, params, ctx)

    monkeypatch.setitem(_REGISTRY, "model-builder", dataclasses.replace(real, fn=counting))
    return seen


# -- cache hits and no-op builds -----------------------------------------------------------------

@pytest.mark.slow
def test_second_build_does_not_call_the_pass_and_noop_leaves_folder_alone(tmp_path, calls, baseline):
    cache = Cache(tmp_path / "cache")
    first, _ = build(recipe(), tmp_path / "a", cache)
    assert len(calls) == 1 and first.ran == ("model-builder",)
    assert pass_record(first.folder)["ran"] is True

    second, log = build(recipe(), tmp_path / "b", cache)
    assert len(calls) == 1, "a cached pass must not be called"
    assert second.ran == () and not second.up_to_date
    assert pass_record(second.folder)["ran"] is False and "cached" in log
    assert_good_folder(second.folder)

    # Same recipe, same folder: nothing is run, rewritten, renamed or even touched.
    before = snapshot(second.folder)
    third, log = build(recipe(), tmp_path / "b", cache)
    assert third.up_to_date and len(calls) == 1 and "up to date" in log
    assert snapshot(second.folder) == before

    # The lock records what was built, not where, when or how fast: byte-identical across
    # folders and caches (this build ran the pass in its own cache, as the baseline did in another).
    assert (first.folder / "build.lock.json").read_bytes() == (baseline / "build.lock.json").read_bytes()
    assert (second.folder / "build.lock.json").read_bytes() == (baseline / "build.lock.json").read_bytes()


@pytest.mark.slow
def test_lock_has_fixed_key_order_and_no_timings(baseline):
    text = (baseline / "build.lock.json").read_text()
    data = json.loads(text)
    assert list(data) == LOCK_KEYS
    assert [list(p) for p in data["passes"]] == [PASS_KEYS]
    assert list(data["passes"][0]["tools"]) == list(runner.KEY_TOOLS)
    assert all(v for v in data["passes"][0]["tools"].values()), "every keyed tool version is known"

    def keys(node):
        if isinstance(node, dict):
            for k, v in node.items():
                yield k
                yield from keys(v)
        elif isinstance(node, list):
            for v in node:
                yield from keys(v)

    timing = [k for k in keys(data) if re.search(r"seconds|timestamp|duration|_at$|^(created|time|date)$", k)]
    assert timing == []
    assert str(baseline) not in text and str(REPO) not in text, "no machine paths in the lock"


@pytest.mark.slow
def test_artifact_hard_links_cache_files(shared_cache, baseline):
    for rel in ("model.onnx.data", "model.onnx"):
        assert os.path.samestat((baseline / rel).stat(), entry_file(shared_cache, baseline, rel).stat()), rel
    # Text files packaging may rewrite are copies: an edit in the folder never reaches the cache.
    for rel in ("genai_config.json", "tokenizer_config.json"):
        assert not os.path.samestat((baseline / rel).stat(), entry_file(shared_cache, baseline, rel).stat()), rel


@pytest.mark.slow
def test_no_cache_writes_nothing_and_links_nothing(tmp_path, calls, baseline):
    root = tmp_path / "never"
    result, log = build(recipe(), tmp_path / "out", Cache(root), use_cache=False)
    assert len(calls) == 1 and "--no-cache" in log
    assert not root.exists(), "--no-cache wrote to the cache"
    assert (result.folder / "model.onnx.data").stat().st_nlink == 1
    assert_good_folder(result.folder)
    assert (result.folder / "build.lock.json").read_bytes() == (baseline / "build.lock.json").read_bytes()


@pytest.mark.slow
def test_force_reruns_and_replaces_the_entry(tmp_path, calls, shared_cache, baseline):
    out = tmp_path / "out"
    build(recipe(), out, shared_cache)
    assert calls == []
    old_entry = entry_file(shared_cache, out).stat()
    old_folder = out.stat()

    _, log = build(recipe(), out, shared_cache, force=True)
    assert len(calls) == 1 and "running (--force)" in log
    assert pass_record(out)["ran"] is True and pass_record(out)["reason"] == "--force"
    new_entry = entry_file(shared_cache, out).stat()
    assert not os.path.samestat(old_entry, new_entry), "--force must replace the cache entry"
    assert os.path.samestat((out / "model.onnx.data").stat(), new_entry)
    assert not os.path.samestat(old_folder, out.stat()), "--force must replace the folder"
    assert_good_folder(out)
    assert lock(out) == lock(baseline), "the rerun made the same files"
    assert_clean_cache(shared_cache)


# -- each key component, changed alone, reruns once and says why -----------------------------------

@pytest.mark.slow
def test_param_change_reruns_once_with_reason(tmp_path, calls, shared_cache, baseline):
    out = tmp_path / "out"
    build(recipe(), out, shared_cache)
    assert calls == []

    build(recipe(block_size=64), out, shared_cache)
    assert len(calls) == 1
    assert pass_record(out)["reason"] == "model-builder: block_size 32 -> 64"

    again, _ = build(recipe(block_size=64), tmp_path / "again", shared_cache)
    assert len(calls) == 1 and pass_record(again.folder)["ran"] is False
    assert build(recipe(block_size=64), out, shared_cache)[0].up_to_date
    back, _ = build(recipe(), out, shared_cache)  # back to 32: the old entry serves it
    assert len(calls) == 1 and not back.up_to_date and lock(out) == lock(baseline)


@pytest.mark.slow
def test_input_change_reruns_once_and_touch_does_not(tmp_path, monkeypatch, calls, shared_cache, baseline,
                                                     model_copy):
    import pipeline.cache

    hashed: list[str] = []
    real_sha = pipeline.cache.sha256_file

    def counting_sha(path):
        if str(path).startswith(str(model_copy)):
            hashed.append(Path(path).name)
        return real_sha(path)

    monkeypatch.setattr(pipeline.cache, "sha256_file", counting_sha)
    out = tmp_path / "out"
    # A byte-identical copy elsewhere: same input digest, so the same cache entry serves it.
    build(recipe(model_copy), out, shared_cache)
    assert calls == [] and pass_record(out)["ran"] is False
    assert lock(out)["passes"][0]["key"] == lock(baseline)["passes"][0]["key"]
    assert len(hashed) == len(list(model_copy.iterdir()))

    # Touch only: the memo re-hashes that one file, finds the same digest, nothing rebuilds.
    weights = model_copy / "model.safetensors"
    hashed.clear()
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    result, _ = build(recipe(model_copy), out, shared_cache)
    assert result.up_to_date and calls == []
    assert hashed == ["model.safetensors"]
    memo = json.loads((shared_cache.root / "digests.json").read_text())[str(model_copy)]
    assert memo["model.safetensors"][1] == weights.stat().st_mtime_ns
    hashed.clear()
    assert build(recipe(model_copy), out, shared_cache)[0].up_to_date and hashed == []

    # Same size, one weight byte different: one rerun, and the reason names the file.
    data = bytearray(weights.read_bytes())
    data[-4] ^= 0x01
    weights.write_bytes(bytes(data))
    build(recipe(model_copy), out, shared_cache)
    assert len(calls) == 1
    assert pass_record(out)["reason"] == "input model.safetensors changed"
    again, _ = build(recipe(model_copy), tmp_path / "again", shared_cache)
    assert len(calls) == 1 and pass_record(again.folder)["ran"] is False


@pytest.mark.slow
def test_tool_version_change_reruns_once_with_reason(tmp_path, monkeypatch, calls, shared_cache, baseline):
    from importlib import metadata

    real_version = metadata.version("onnxruntime-genai")
    real = runner.tool_versions
    out = tmp_path / "out"
    build(recipe(), out, shared_cache)

    def older_genai(names=runner.TOOLS):
        versions = real(names)
        if "onnxruntime-genai" in versions:
            versions["onnxruntime-genai"] = "0.17.1"
        return versions

    with monkeypatch.context() as m:
        m.setattr(runner, "tool_versions", older_genai)
        build(recipe(), out, shared_cache)
        assert len(calls) == 1
        assert pass_record(out)["reason"] == f"onnxruntime-genai {real_version} -> 0.17.1"
        assert lock(out)["passes"][0]["tools"]["onnxruntime-genai"] == "0.17.1"
        again, _ = build(recipe(), tmp_path / "again", shared_cache)
        assert len(calls) == 1 and pass_record(again.folder)["ran"] is False
    # The real version again: its entry is still there.
    result, _ = build(recipe(), out, shared_cache)
    assert len(calls) == 1 and not result.up_to_date and lock(out) == lock(baseline)


@pytest.mark.slow
def test_pass_implementation_version_reruns_once_with_reason(tmp_path, monkeypatch, calls, shared_cache, baseline):
    out = tmp_path / "out"
    build(recipe(), out, shared_cache)
    current = _REGISTRY["model-builder"]
    with monkeypatch.context() as m:
        m.setitem(_REGISTRY, "model-builder", dataclasses.replace(current, version=f"{current.version}.1"))
        build(recipe(), out, shared_cache)
        assert len(calls) == 1
        assert pass_record(out)["reason"] == f"model-builder implementation {current.version} -> {current.version}.1"
        again, _ = build(recipe(), tmp_path / "again", shared_cache)
        assert len(calls) == 1 and pass_record(again.folder)["ran"] is False


@pytest.mark.slow
def test_target_and_trust_remote_code_change_the_key(baseline):
    """Only cpu builds run here, and a cpu target cannot change alone to another valid one; so
    the key and the reason are checked against the baseline's real lock."""
    previous = lock(baseline)
    prev = runner._prev_pass(previous, 0)
    registered = get_pass("model-builder")

    def parts(rec):
        params = {k: v for k, v in rec.passes[0].items() if k != "type"}
        return runner._key_parts(registered, params, rec, previous["source"]["digest"], prev["tools"])

    def why(p):
        return runner._explain(prev, p, digest_of(p), previous["source"], 0)

    assert digest_of(parts(recipe())) == prev["key"], "the key function reproduces the lock's key"
    cuda = parts(recipe(target={"device": "gpu", "execution_provider": "cuda"}))
    assert digest_of(cuda) != prev["key"]
    assert why(cuda) == "target.device cpu -> gpu; target.execution_provider cpu -> cuda"
    trusted = parts(recipe(model={"source": str(TINY_MODEL), "trust_remote_code": True}))
    assert digest_of(trusted) != prev["key"]
    assert why(trusted) == "model.trust_remote_code changed"

    # Every component of the key, changed alone, changes the key.
    base = parts(recipe())
    changed = {"pass": "other", "version": base["version"] + ".1", "params": {**base["params"], "block_size": 64},
               "target": {"device": "gpu", "execution_provider": "cuda"}, "trust_remote_code": True,
               "input": "0" * 64, "tools": {**base["tools"], "torch": "0.0"}}
    assert set(changed) == set(base)
    keys = {digest_of({**base, k: v}) for k, v in changed.items()}
    assert len(keys) == len(changed) and digest_of(base) not in keys


# -- --locked ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_locked(tmp_path, shared_cache, baseline):
    file, out = recipe_file(tmp_path), tmp_path / "out"
    common = ["--output", str(out), "--cache-dir", str(shared_cache.root), "--locked"]

    r = run_cli("build", str(file), *common)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"--locked: no readable lock at {out / 'build.lock.json'}" in r.stderr
    assert not out.exists()

    build(recipe(), out, shared_cache)
    before = snapshot(out)
    r = run_cli("build", str(file), *common)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"up to date {out}"

    r = run_cli("build", str(file), *common, "--set", "passes.0.block_size=64")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "passes[0]: model-builder: block_size 32 -> 64" in errors[0], r.stderr
    r = run_cli("build", str(file), *common, "--set", "target.device=gpu", "--set", "target.execution_provider=cuda")
    assert r.returncode == 2 and "target.execution_provider cpu -> cuda" in r.stderr, r.stderr
    assert snapshot(out) == before, "a refused build touched the folder"

    # A committed copy of the lock holds a build into another folder to the same result.
    committed = tmp_path / "committed.lock.json"
    committed.write_bytes((out / "build.lock.json").read_bytes())
    other = tmp_path / "other"
    r = run_cli("build", str(file), "--output", str(other), "--cache-dir", str(shared_cache.root),
                "--lock", str(committed))
    assert r.returncode == 0, r.stderr
    assert (other / "build.lock.json").read_bytes() == committed.read_bytes()


# -- crashes ---------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("point", ["pass-ran", "cache-store", "staged", "swapping"])
def test_sigkill_then_next_build_recovers(point, tmp_path, calls, shared_cache, baseline):
    """Killed at each step: the previous folder survives (or is put back), no entry is stored
    half-made, and the next build cleans up and succeeds. pass-ran runs in a private cache (the
    next build must run the pass again); cache-store reruns a cached pass with --force, so the
    entry it would have replaced must survive and the next build, a pure cache hit, must still
    clean up the killed build's work; staged and swapping come after the cache, so share it."""
    out = tmp_path / "out"
    build(recipe(), out, shared_cache)  # the previous output
    before = hash_folder(out)
    cache = Cache(tmp_path / "cache") if point == "pass-ran" else shared_cache
    entry = [shared_cache.entries_dir / lock(out)["passes"][0]["key"] / "entry.json", entry_file(shared_cache, out)]
    entry_before = [p.stat().st_ino for p in entry]
    entries_before = sorted(os.listdir(cache.entries_dir)) if cache.entries_dir.is_dir() else []
    env = {"PIPELINE_CRASH_AT": point} | ({"PIPELINE_NO_EXCHANGE": "1"} if point == "swapping" else {})
    r = run_cli("build", str(recipe_file(tmp_path)), "--set", f"package.foundry_local.name={CRASHED_NAME}",
                "--output", str(out), "--cache-dir", str(cache.root), *(["--force"] if point == "cache-store" else []),
                env=env)
    assert r.returncode == -signal.SIGKILL, r.stderr

    left = leftovers(out)
    assert any(n.startswith(f".{out.name}.partial-") for n in left), left
    if point == "swapping":
        assert not out.exists(), "killed between the two renames"
        old = [n for n in left if n.startswith(f".{out.name}.old-")]
        assert len(old) == 1 and hash_folder(out.parent / old[0]) == before
    else:
        assert hash_folder(out) == before, "the previous output changed"
    for root in cache.entries_dir.iterdir():
        assert (root / "entry.json").is_file(), f"partial entry {root.name}"
    if point == "pass-ran":
        assert list(cache.entries_dir.iterdir()) == [], "an entry was stored before the crash point"
    else:
        assert [p.stat().st_ino for p in entry] == entry_before, "the cached entry was replaced or damaged"
        assert sorted(os.listdir(cache.entries_dir)) == entries_before
    if point in ("pass-ran", "cache-store"):
        assert list(cache.tmp_dir.iterdir()), "the killed build's work should be left in tmp/"

    if point == "swapping":
        # The previous recipe again: its folder is put back as it was, and nothing needs doing.
        restored, log = build(recipe(), out, shared_cache)
        assert "restored" in log and restored.up_to_date
        assert hash_folder(out) == before

    build(recipe(package={"foundry_local": {"name": CRASHED_NAME}}), out, cache)
    assert len(calls) == (1 if point == "pass-ran" else 0)
    assert json.loads((out / "inference_model.json").read_text())["Name"] == CRASHED_NAME
    assert_good_folder(out)
    assert leftovers(out) == []
    assert_clean_cache(cache)
    assert lock(out)["passes"] == lock(baseline)["passes"]


# -- concurrency -----------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("same_output", [False, True], ids=["two-outputs", "one-output"])
def test_concurrent_builds_run_the_pass_once(tmp_path, same_output, baseline):
    cache = Cache(tmp_path / "cache")
    outs = [tmp_path / "out"] * 2 if same_output else [tmp_path / "a", tmp_path / "b"]
    file = recipe_file(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-m", "pipeline", "build", str(file), "--output", str(o),
                               "--cache-dir", str(cache.root)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for o in outs]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]

    # Each says "ran" or "cached"; into one folder, a build that starts after the other finished
    # may find it up to date (it never should: both start together and the pass takes seconds).
    outcomes = sorted((STEP.findall(err) or ["up to date" if "up to date" in err else "?"])[0]
                      for _, err in results)
    assert outcomes == ["cached", "ran"] or (same_output and outcomes == ["ran", "up to date"]), outcomes
    assert len(list(cache.entries_dir.iterdir())) == 1
    for o in set(outs):
        assert_good_folder(o)
        assert leftovers(o) == []
        assert (o / "build.lock.json").read_bytes() == (baseline / "build.lock.json").read_bytes()
    if not same_output:
        assert sorted(pass_record(o)["ran"] for o in outs) == [False, True]
    assert_clean_cache(cache)


# -- damaged entries -------------------------------------------------------------------------------

@pytest.mark.slow
def test_damaged_entry_is_dropped_and_rebuilt_never_served(tmp_path, calls):
    cache = Cache(tmp_path / "cache")
    first, _ = build(recipe(), tmp_path / "a", cache)
    key = lock(first.folder)["passes"][0]["key"]
    data = entry_file(cache, first.folder)
    good = lock(first.folder)["files"]["model.onnx.data"]

    # Bit rot: same size, so only the full check sees it.
    with open(data, "r+b") as f:
        f.seek(data.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    r = run_cli("cache", "--cache-dir", str(cache.root), "verify")
    assert r.returncode == 1
    assert f"{key[:12]} (model-builder): model.onnx.data does not match its sha256; dropped" in r.stderr
    assert "1 damaged" in r.stdout
    assert not (cache.entries_dir / key).exists()

    second, _ = build(recipe(), tmp_path / "b", cache)
    assert len(calls) == 2 and pass_record(second.folder)["reason"] == "first build"
    assert_good_folder(second.folder)
    assert run_cli("cache", "--cache-dir", str(cache.root), "verify").returncode == 0

    # Truncated: the cheap check on lookup catches it, warns, drops it and runs the pass again.
    with open(entry_file(cache, second.folder), "r+b") as f:
        f.truncate(1000)
    third, log = build(recipe(), tmp_path / "c", cache)
    assert f"warning: cache entry {key[:12]} was damaged (model.onnx.data has the wrong size); dropped it" in log
    assert len(calls) == 3 and pass_record(third.folder)["ran"] is True
    assert lock(third.folder)["files"]["model.onnx.data"] == good
    assert_good_folder(third.folder)
    assert_clean_cache(cache)


# -- cache commands (entries made directly: these need no conversion) ------------------------------

def _store(cache: Cache, key: str, size: int, block_size: int = 32):
    work = cache.workdir()
    (work / "out").mkdir()
    (work / "out" / "model.onnx.data").write_bytes(b"x" * size)
    entry = cache.store(key, work / "out", {"pass": "model-builder",
                                            "key_parts": {"params": {"block_size": block_size}}})
    work.rmdir()
    return entry


def test_cache_ls_du_rm(tmp_path):
    cache = Cache(tmp_path / "cache")
    a, b = "ab" * 32, "ab" + "cd" * 31
    _store(cache, a, 1000)
    _store(cache, b, 3000, block_size=64)
    cli = ["cache", "--cache-dir", str(cache.root)]

    r = run_cli(*cli, "ls")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    assert any(line.startswith(a[:12]) and "model-builder" in line and "block_size=32" in line for line in lines)
    assert run_cli(*cli, "du").stdout.startswith("3.9K in 2 entries")

    for bad, why in (("ffff", "no cache entry matches 'ffff'"), ("ab", "more than one cache entry matches 'ab'")):
        r = run_cli(*cli, "rm", bad)
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"error: {why}; see `pipeline cache ls`"]
    assert len(cache.entries()) == 2

    r = run_cli(*cli, "rm", b[:12])
    assert r.returncode == 0 and r.stdout.strip() == f"removed {b[:12]}"
    assert [e.key for e in cache.entries()] == [a]
    # An empty prefix (`pipeline cache rm "$KEY"` with KEY unset) names nothing, even when one
    # entry is left for it to match.
    r = run_cli(*cli, "rm", "")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: no cache entry matches ''; see `pipeline cache ls`"]
    assert [e.key for e in cache.entries()] == [a]
    assert list(cache.tmp_dir.iterdir()) == []


def test_cache_gc_removes_least_recently_used_first(tmp_path):
    cache = Cache(tmp_path / "cache")
    old, used = "1" * 64, "2" * 64
    _store(cache, used, 1000)
    _store(cache, old, 1000)
    for key, age in ((used, 200), (old, 100)):  # `used` is the older of the two...
        t = os.path.getmtime(cache.entries_dir / key / "entry.json") - age
        os.utime(cache.entries_dir / key / "entry.json", (t, t))
    entry, damaged = cache.lookup(used)  # ...until a build uses it
    assert entry is not None and damaged is None
    cli = ["cache", "--cache-dir", str(cache.root)]

    r = run_cli(*cli, "gc", "--max-size", "1500")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"removed {old[:12]} model-builder (1000B)"
    assert [e.key for e in cache.entries()] == [used]

    r = run_cli(*cli, "gc", "--max-size", "0")
    assert r.returncode == 0 and cache.entries() == []
    assert run_cli(*cli, "du").stdout.startswith("0B in 0 entries")

    r = run_cli(*cli, "gc", "--max-size", "abc")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: --max-size 'abc': expected a size such as 500M, 20G or 1T"]


def test_du_and_gc_count_a_file_shared_by_entries_once(tmp_path):
    """The evaluate pass hard-links its input's weights into its own entry: those bytes are on
    disk once, and removing one of the two entries frees none of them."""
    cache = Cache(tmp_path / "cache")
    built, evaluated = "5" * 64, "6" * 64
    first = _store(cache, built, 4096)
    work = cache.workdir()
    link_tree(first.files_dir, work / "out")
    (work / "out" / "metrics.json").write_text("{}")
    cache.store(evaluated, work / "out", {"pass": "evaluate"})
    work.rmdir()
    assert cache.disk_usage() == 4096 + 2
    cli = ["cache", "--cache-dir", str(cache.root)]
    assert run_cli(*cli, "du").stdout.startswith("4.0K in 2 entries")

    assert cache.gc(4096 + 2) == ([], 0)  # fits: counted twice, it would not
    os.utime(cache.entries_dir / built / "entry.json", (1, 1))  # the older: gc takes it first
    removed, freed = cache.gc(4096 + 1)
    # Dropping the builder's entry frees nothing (evaluate's still links the weights): gc goes on.
    assert [e.key for e in removed] == [built, evaluated] and freed == 4096 + 2
    assert cache.entries() == []


def test_verify_drops_an_entry_without_a_record(tmp_path):
    cache = Cache(tmp_path / "cache")
    _store(cache, "3" * 64, 10)
    (cache.entries_dir / ("3" * 64) / "entry.json").unlink()
    entry, damaged = cache.lookup("3" * 64)
    assert entry is None and damaged.startswith(f"cache entry {'3' * 12} was damaged (")
    assert damaged.endswith("); dropped it") and not (cache.entries_dir / ("3" * 64)).exists()
    _store(cache, "4" * 64, 10)
    (cache.entries_dir / ("4" * 64) / "entry.json").unlink()
    r = run_cli("cache", "--cache-dir", str(cache.root), "verify")
    assert r.returncode == 1 and "entry.json is missing or unreadable; dropped" in r.stderr
    assert cache.entries() == []


# -- swap and recovery corner cases ------------------------------------------------------------------

def test_recover_leaves_a_sibling_outputs_leftovers_alone(tmp_path):
    """`.model.v2.old-PID` is what a killed build of `model.v2` left: the only copy of that
    folder. Recovering `model` must not touch it."""
    pid = dead_pid()
    sibling_old = tmp_path / f".model.v2.old-{pid}"
    sibling_old.mkdir()
    (sibling_old / "build.json").write_text("{}")
    mine_partial = tmp_path / f".model.partial-{pid}-abc123"
    mine_partial.mkdir()
    runner._recover(tmp_path / "model", lambda m: None)
    assert sibling_old.is_dir(), "recovering one output destroyed another's moved-aside folder"
    assert not mine_partial.exists()

    mine_old = tmp_path / f".model.old-{pid}"
    mine_old.mkdir()
    (mine_old / "build.json").write_text("{}")
    logs = []
    runner._recover(tmp_path / "model", logs.append)
    assert (tmp_path / "model" / "build.json").is_file()
    assert logs == [f"restored {tmp_path / 'model'} from an interrupted build"]


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_swap_when_another_build_creates_the_output_first(tmp_path, monkeypatch, exchange):
    """Two builds of one output: both see no folder, the other one's rename lands first."""
    if not exchange:
        monkeypatch.setenv("PIPELINE_NO_EXCHANGE", "1")
    out, mine = tmp_path / "out", tmp_path / "mine"
    mine.mkdir()
    (mine / "build.json").write_text('"mine"')
    real_rename = os.rename
    raced = []

    def rename_after_the_other_build(src, dst):
        if Path(dst) == out and not raced:
            raced.append(True)
            out.mkdir()
            (out / "build.json").write_text('"theirs"')
        return real_rename(src, dst)

    monkeypatch.setattr(runner.os, "rename", rename_after_the_other_build)
    runner._swap_into_place(mine, out)
    assert (out / "build.json").read_text() == '"mine"'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_file_params_key_by_content_including_the_default_file(tmp_path):
    """The evaluate pass scores pipeline/data/heldout.txt unless told otherwise: that file's
    content is in its key, so editing it reruns the pass; a given file counts by content too."""
    registered = get_pass("evaluate")
    rec = recipe()
    default = runner._key_parts(registered, {}, rec, "0" * 64, {})
    heldout = Path(runner.__file__).parent / "data" / "heldout.txt"
    assert default["params"]["text"] == f"sha256:{sha256_file(heldout)}"
    same = tmp_path / "same.txt"
    same.write_bytes(heldout.read_bytes())
    assert runner._key_parts(registered, {"text": str(same)}, rec, "0" * 64, {}) == default
    same.write_text("another text\n")
    assert runner._key_parts(registered, {"text": str(same)}, rec, "0" * 64, {}) != default
