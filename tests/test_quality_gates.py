"""The evaluate pass inside a build, and recipe `checks:` as quality gates."""

from __future__ import annotations

import json

import pytest

from conftest import REPO, run_cli, tiny_recipe

pytestmark = pytest.mark.slow


SHORT_TEXT = (REPO / "pipeline" / "data" / "heldout.txt").read_text(encoding="utf-8")[:1500]


def _recipe(tmp_path, checks: dict, name: str = "gated") -> str:
    text = tmp_path / "short.txt"
    text.write_text(SHORT_TEXT, encoding="utf-8")
    data = tiny_recipe("int4") | {"name": name}
    data["passes"].append({"type": "evaluate", "window": 64, "stride": 32, "max_new_tokens": 8,
                           "text": str(text)})
    data["checks"] = checks
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_evaluate_pass_writes_metrics_and_gates_pass(tmp_path):
    out = tmp_path / "out"
    r = run_cli("build", _recipe(tmp_path, {"max_perplexity_increase_pct": 1000, "min_decode_tokens_per_s": 1}),
                "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert "[3/4] evaluate" in r.stderr and "check passed: max_perplexity_increase_pct" in r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["perplexity"]["onnx"] > 0 and metrics["perplexity"]["window"] == 64
    assert metrics["speed"]["decode_tokens_per_s"] > 0
    assert (out / "report.md").read_text().startswith("# ")
    info = json.loads((out / "build.json").read_text())
    assert [c["name"] for c in info["checks"]] == ["max_perplexity_increase_pct", "min_decode_tokens_per_s"]
    assert all(c["passed"] for c in info["checks"])
    assert "metrics.json" in info["files"]

    # Nothing changed: up to date. A stricter gate alone re-checks from the cache, runs no pass.
    r = run_cli("build", _recipe(tmp_path, {"max_perplexity_increase_pct": 1000, "min_decode_tokens_per_s": 1}),
                "--output", str(out))
    assert "up to date" in r.stderr, r.stderr


def test_failed_gate_exits_3_names_the_check_and_keeps_the_output(tmp_path):
    out = tmp_path / "out"
    r = run_cli("build", _recipe(tmp_path, {"max_perplexity_increase_pct": 1000}), "--output", str(out))
    assert r.returncode == 0, r.stderr
    before = (out / "build.lock.json").read_text()

    r = run_cli("build", _recipe(tmp_path, {"max_perplexity_increase_pct": 1000, "min_top1_agreement": 0.999}),
                "--output", str(out))
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr
    assert "min_top1_agreement: measured" in r.stderr and "< threshold 0.999" in r.stderr
    assert "cached" in r.stderr, "the passes themselves are reused; only the gate differs"
    assert (out / "build.lock.json").read_text() == before, "a rejected build must not replace the output"
    rejected = tmp_path / "out.rejected"
    recorded = json.loads((rejected / "build.json").read_text())["checks"]
    assert {c["name"]: c["passed"] for c in recorded} == {"max_perplexity_increase_pct": True,
                                                          "min_top1_agreement": False}


def test_eval_command_compares_builds_and_gates(built, tmp_path):
    report = tmp_path / "report"
    text = tmp_path / "short.txt"
    text.write_text(SHORT_TEXT, encoding="utf-8")
    r = run_cli("eval", str(built["int4"]), str(built["fp32"]), "--window", "64", "--stride", "32", "--no-speed",
                "--text", str(text),
                "--report", str(report), "--check", "max_kl_divergence=1000")
    assert r.returncode == 0, r.stderr
    assert "| tiny-int4 |" in r.stdout and "| tiny-fp32 |" in r.stdout
    assert (report / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fp32 = json.loads((report / "fp32.metrics.json").read_text())
    assert fp32["parity"]["top1_agreement"] == 1.0

    r = run_cli("eval", str(built["fp32"]), "--no-speed", "--text", str(text), "--check", "max_perplexity_increase=3")
    assert r.returncode == 2 and "did you mean 'max_perplexity_increase_pct'" in r.stderr
    r = run_cli("eval", str(built["int4"]), "--window", "64", "--stride", "32", "--no-speed", "--text", str(text),
                "--check", "min_top1_agreement=0.999")
    assert r.returncode == 3 and "min_top1_agreement" in r.stderr
