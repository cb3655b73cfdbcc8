"""Installing into Foundry Local's cache, publishing a release and verifying it."""

from __future__ import annotations

import json
import shutil
import tarfile

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow


def test_install_places_a_versioned_subfolder(built, tmp_path):
    cache = tmp_path / "foundry-cache"
    first = run_cli("install", str(built["int4"]), "--foundry-cache", str(cache))
    assert first.returncode == 0, first.stderr
    second = run_cli("install", str(built["int4"]), "--foundry-cache", str(cache))
    assert second.returncode == 0, second.stderr
    assert "foundry model run tiny-qwen2-chat-int4-generic-cpu:2" in second.stdout

    assert [p.name for p in cache.iterdir() if p.is_file()] == [], "nothing may sit in the cache root"
    names = sorted(json.loads(p.read_text())["Name"] for p in cache.glob("*/inference_model.json"))
    assert names == ["tiny-qwen2-chat-int4-generic-cpu:1", "tiny-qwen2-chat-int4-generic-cpu:2"]
    for folder in cache.iterdir():
        assert (folder / "genai_config.json").is_file()
        check = run_cli("check", str(folder))
        assert check.returncode == 0, check.stdout + check.stderr


def test_publish_writes_a_release_that_verifies(built, tmp_path):
    r = run_cli("publish", str(built["int4"]), "--to", str(tmp_path / "rel"), "--archive")
    assert r.returncode == 0, r.stderr
    release = tmp_path / "rel" / "tiny-int4"
    manifest = json.loads((release / "manifest.json").read_text())
    assert {"model.onnx", "model.onnx.data", "genai_config.json", "inference_model.json", "README.md",
            "build.json"} <= set(manifest["files"])
    card = (release / "README.md").read_text()
    for expected in ("# tiny-qwen2-chat-int4-generic-cpu", "## Source", "onnxruntime-genai", "model-builder",
                     "block_size=32", "## Prompt template", "<|im_start|>", "licence", "foundry model run"):
        assert expected in card, expected
    assert run_cli("verify", str(release)).returncode == 0
    archive = tmp_path / "rel" / "tiny-int4.tar.gz"
    assert run_cli("verify", str(archive)).returncode == 0
    with tarfile.open(archive) as tar:
        assert "tiny-int4/manifest.json" in tar.getnames()

    # Publishing again without --force is refused and changes nothing.
    again = run_cli("publish", str(built["int4"]), "--to", str(tmp_path / "rel"))
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr

    # A changed byte, a missing file and an extra file are each reported.
    data = release / "model.onnx.data"
    blob = bytearray(data.read_bytes())
    blob[100] ^= 0xFF
    data.write_bytes(bytes(blob))
    (release / "tokenizer.json").unlink()
    (release / "extra.txt").write_text("x")
    r = run_cli("verify", str(release))
    assert r.returncode == 1
    for expected in ("model.onnx.data: sha256 does not match", "tokenizer.json: missing", "extra.txt: not in the manifest"):
        assert expected in r.stderr, r.stderr


def test_publishing_a_folder_that_fails_check_is_refused(built, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(built["int4"], broken)
    (broken / "model.onnx.data").unlink()
    r = run_cli("publish", str(broken), "--to", str(tmp_path / "rel"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "fails `pipeline check" in r.stderr
    assert not (tmp_path / "rel").exists()
    r = run_cli("install", str(broken), "--foundry-cache", str(tmp_path / "fc"))
    assert r.returncode == 2 and not (tmp_path / "fc").exists()


def test_publish_to_the_hub_offline_is_one_clear_line(built, tmp_path):
    r = run_cli("publish", str(built["int4"]), "--to", "hf://someone/tiny", env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "HF_HUB_OFFLINE" in r.stderr or "failed" in r.stderr
