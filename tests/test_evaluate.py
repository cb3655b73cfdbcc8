"""pipeline.evaluate and pipeline.report: perplexity and parity against transformers, speed in a
fresh process, checks, the report files. Small texts and windows keep the slow ones to seconds."""

from __future__ import annotations

import math

import pytest

from pipeline.errors import OutputError, PipelineError, SourceError
from pipeline.evaluate import (
    CHECKS,
    CORPUS,
    EvaluationError,
    apply_checks,
    evaluate,
    sliding_windows,
)
from pipeline.report import write_report

WINDOW, STRIDE = 64, 32
PROMPTS = ("Tell me a fable.", "What is the capital of France?")
TEXT = CORPUS.read_text(encoding="utf-8")[-2500:]  # a few hundred tokens: several windows


def run(folder, source, **kw):
    options = {"text": TEXT, "window": WINDOW, "stride": STRIDE, "prompts": PROMPTS, "max_new_tokens": 8, "speed": False}
    return evaluate(folder, source, **{**options, **kw})


@pytest.fixture(scope="module")
def fp32(built, tiny_model):
    return run(built["fp32"], tiny_model, speed=True, speed_prompt_tokens=16, speed_new_tokens=8, speed_repeats=1)


def hf_sliding_perplexity(source, ids, window, stride):
    """Hugging Face's documented method (labels -100 outside the new tokens), as a reference."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32).eval()
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + window, len(ids))
        chunk = torch.tensor([ids[begin:end]])
        labels = chunk.clone()
        labels[:, : -(end - prev_end)] = -100
        with torch.no_grad():
            loss = model(chunk, labels=labels).loss
        scored = int((labels[:, 1:] != -100).sum())
        nll += float(loss) * scored
        count += scored
        prev_end = end
        if end == len(ids):
            break
    return math.exp(nll / count), count


# ---------------------------------------------------------------------------------------------
# Perplexity and parity on real builds


@pytest.mark.slow
def test_fp32_matches_transformers(fp32, built, tiny_model):
    import onnxruntime_genai as og

    ppl = fp32["perplexity"]
    assert abs(ppl["onnx"] / ppl["source"] - 1) < 1e-3
    assert abs(ppl["increase_pct"]) < 0.1
    assert ppl["same_token_ids"] is True
    assert (ppl["window"], ppl["stride"]) == (WINDOW, STRIDE)
    assert len(ppl["text_sha256"]) == 64

    # The source side agrees with Hugging Face's own sliding-window recipe on the same ids.
    ids = [int(i) for i in og.Tokenizer(og.Model(str(built["fp32"]))).encode(TEXT)]
    reference, count = hf_sliding_perplexity(tiny_model, ids, WINDOW, STRIDE)
    assert ppl["tokens_scored"] == count == len(ids) - 1
    assert ppl["source"] == pytest.approx(reference, rel=1e-5)
    assert ppl["onnx"] == pytest.approx(reference, rel=1e-3)

    parity = fp32["parity"]
    assert parity["top1_agreement"] == 1.0
    assert parity["kl_divergence"] < 1e-4
    assert parity["greedy_agreement"] == 1.0 and parity["exact_match"] == 1.0
    assert parity["prompts"] == len(PROMPTS) and parity["positions"] == count


@pytest.mark.slow
def test_fp32_speed_and_model_sections(fp32):
    speed = fp32["speed"]
    for key in ("time_to_first_token_s", "prompt_tokens_per_s", "decode_tokens_per_s", "peak_rss_mb", "load_s"):
        assert speed[key] > 0, key
    assert speed["max_length"] == 16 + 8 and (speed["prompt_tokens"], speed["new_tokens"]) == (16, 8)
    # Measured in a fresh process: far below this test process, which holds torch and two models.
    assert speed["peak_rss_mb"] < 1024
    model = fp32["model"]
    assert model["precision"] == "fp32" and model["files"] == 2 and model["size_bytes"] > 1_000_000
    assert fp32["skipped"] == {}
    assert fp32["meta"]["versions"]["onnxruntime-genai"]


@pytest.mark.slow
def test_int4_diverges_more_than_fp32(fp32, built, tiny_model):
    int4 = run(built["int4"], tiny_model)
    assert int4["parity"]["kl_divergence"] > fp32["parity"]["kl_divergence"]
    assert int4["parity"]["top1_agreement"] <= 1.0
    assert int4["model"]["size_bytes"] < fp32["model"]["size_bytes"]
    assert int4["perplexity"]["text_sha256"] == fp32["perplexity"]["text_sha256"]
    assert "speed" not in int4 and "speed" in int4["skipped"]


@pytest.mark.slow
def test_without_source_only_onnx_side(built):
    metrics = run(built["int8"], None, prompts=PROMPTS[:1])
    assert metrics["perplexity"]["onnx"] > 0 and metrics["perplexity"]["source"] is None
    assert "parity" not in metrics and metrics["skipped"]["parity"] == "no source model given"
    [check] = apply_checks(metrics, {"min_top1_agreement": 0.9})
    assert not check.passed and "section 'parity' is missing: no source model given" in check.message


@pytest.mark.slow
def test_pruned_lm_head_is_detected(tmp_path, tiny_model):
    from conftest import tiny_recipe

    from pipeline.recipe import recipe_from_dict
    from pipeline.runner import build

    recipe = recipe_from_dict(tiny_recipe("fp32", passes=[{"type": "model-builder", "precision": "fp32",
                                                           "extra_options": {"prune_lm_head": True}}]))
    folder = build(recipe, output=tmp_path / "pruned", log=lambda m: None).folder
    metrics = run(folder, tiny_model, prompts=PROMPTS[:1])
    assert "perplexity" not in metrics and "prune_lm_head" in metrics["skipped"]["perplexity"]
    assert metrics["parity"]["greedy_agreement"] == 1.0 and metrics["parity"]["kl_divergence"] is None
    [check] = apply_checks(metrics, {"max_perplexity_increase_pct": 3})
    assert not check.passed and "prune_lm_head" in check.message


@pytest.mark.slow
def test_bad_input_gives_one_clear_error(built, tiny_model, tmp_path):
    with pytest.raises(EvaluationError, match=r"is \d+ tokens; perplexity needs at least one window of 64"):
        run(built["int4"], None, text="Too short.")
    with pytest.raises(EvaluationError, match="is empty"):
        run(built["int4"], None, text="  \n")
    with pytest.raises(SourceError, match="not a Hugging Face model folder"):
        run(built["int4"], tmp_path)
    with pytest.raises(EvaluationError, match="stride 100: must be between 1 and the window"):
        run(built["int4"], None, stride=100)
    with pytest.raises(EvaluationError, match="context length"):
        run(built["int4"], None, window=10_000)
    for error in (EvaluationError, SourceError):
        assert issubclass(error, PipelineError)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(OutputError, match="not a Foundry Local model folder"):
        evaluate(tmp_path, text=TEXT)
    with pytest.raises(OutputError, match="is not a folder"):
        evaluate(tmp_path / "nope", text=TEXT)


# ---------------------------------------------------------------------------------------------
# The sliding window, checks and the report (no model needed)


@pytest.mark.parametrize("n,window,stride", [(10, 4, 2), (10, 4, 4), (9, 4, 3), (4, 4, 2), (100, 64, 32), (5, 8, 8)])
def test_sliding_windows_score_every_token_once(n, window, stride):
    scored, windows = [], sliding_windows(n, window, stride)
    for begin, end, first in windows:
        assert end - begin <= window and begin < first <= end
        scored += range(first, end)
    # A window's first token has no context in it: with stride == window it goes unscored (as in HF).
    unscored = {b for b, _, _ in windows} if stride == window else {0}
    assert scored == [i for i in range(n) if i not in unscored]


METRICS = {
    "perplexity": {"onnx": 10.412, "source": 10.0, "increase_pct": 4.12},
    "parity": {"top1_agreement": 0.97, "kl_divergence": 0.01, "greedy_agreement": 1.0},
    "skipped": {"speed": "speed measurement turned off"},
}


def test_apply_checks_pass_fail_and_missing():
    results = apply_checks(METRICS, {"max_perplexity_increase_pct": 3, "min_top1_agreement": 0.95,
                                     "max_kl_divergence": 0.001, "min_greedy_agreement": 1.0,
                                     "min_decode_tokens_per_s": 10})
    by = {r.name: r for r in results}
    assert by["max_perplexity_increase_pct"].message == \
        "max_perplexity_increase_pct: measured 4.12 > threshold 3 (perplexity.increase_pct)"
    assert not by["max_perplexity_increase_pct"].passed and by["max_perplexity_increase_pct"].measured == 4.12
    assert by["min_top1_agreement"].passed
    assert by["min_top1_agreement"].message == "min_top1_agreement: measured 0.97 >= threshold 0.95 (parity.top1_agreement)"
    assert not by["max_kl_divergence"].passed and "measured 0.01 > threshold 0.001" in by["max_kl_divergence"].message
    assert by["min_greedy_agreement"].passed  # equal to the threshold passes
    missing = by["min_decode_tokens_per_s"]
    assert not missing.passed and missing.measured is None
    assert missing.message == ("min_decode_tokens_per_s: not measured (speed.decode_tokens_per_s): "
                               "section 'speed' is missing: speed measurement turned off")
    assert missing.to_dict()["metric"] == "speed.decode_tokens_per_s"


def test_apply_checks_null_field_and_unknown_name():
    metrics = {"perplexity": {"onnx": 5.0, "source": None, "increase_pct": None},
               "skipped": {"perplexity.increase_pct": "no source model given"}}
    [check] = apply_checks(metrics, {"max_perplexity_increase_pct": 3})
    assert not check.passed and check.message.endswith("'perplexity.increase_pct' is missing: no source model given")
    with pytest.raises(EvaluationError, match=r"unknown check max_perplexity_pct \(known: max_perplexity_increase_pct"):
        apply_checks(metrics, {"max_perplexity_pct": 3})
    assert all(kind in ("min", "max") and name.startswith(kind) for name, (_, kind) in CHECKS.items())


def _result(name, precision, size_mb, ppl, decode):
    return {"model": {"name": name, "precision": precision, "size_bytes": int(size_mb * 1024 * 1024), "files": 2},
            "perplexity": {"onnx": ppl, "source": 10.0, "increase_pct": (ppl / 10 - 1) * 100, "tokens_scored": 500,
                           "text_tokens": 501, "window": 256, "stride": 128, "text": "given text",
                           "text_sha256": "ab" * 32, "same_token_ids": True},
            "speed": {"time_to_first_token_s": 0.01, "prompt_tokens_per_s": 5000.0, "decode_tokens_per_s": decode,
                      "prompt_tokens": 128, "new_tokens": 64, "max_length": 192, "repeats": 3,
                      "peak_rss_mb": 300.0, "cpu_count": 8},
            "skipped": {"parity": "no source model given"}}


def test_report_writes_markdown_and_png(tmp_path):
    results = [_result("m-int4", "int4", 300, 10.6, 40.0), _result("m-fp32", "fp32", 1900, 10.0, 12.0)]
    results[0]["checks"] = [c.to_dict() for c in apply_checks(results[0], {"max_perplexity_increase_pct": 3})]
    md, png = write_report(results, tmp_path / "out", title="Tiny")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    text = md.read_text(encoding="utf-8")
    assert text.startswith("# Tiny\n")
    header = next(line for line in text.splitlines() if line.startswith("| build"))
    for column in ("precision", "size MB", "ppl onnx", "ppl source", "+%", "top-1", "KL", "greedy", "TTFT s",
                   "prompt tok/s", "decode tok/s", "peak RSS MB"):
        assert f"| {column} |" in header
    assert "| m-int4 | int4 | 300.0 | 10.6 | 10 | +6.00 | – | – | – | 0.01 | 5,000 | 40.0 | 300 |" in text
    assert "FAILED max_perplexity_increase_pct: measured 6 > threshold 3" in text
    assert "not measured: `parity`: no source model given" in text


def test_report_with_one_build_or_no_perplexity(tmp_path):
    [one] = [_result("only", "int4", 1, 12.0, 30.0)]
    for i, results in enumerate(([one], [{"model": one["model"]}], [])):
        md, png = write_report(results, tmp_path / str(i))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and md.is_file()
