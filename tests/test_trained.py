"""The trained model: a held-out perplexity worth measuring, the tiny qwen2's tokenizer and template,
a record that matches the repository's text, and builds whose quantization loss is visible but sane."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import run_cli

from pipeline import tiny, trained

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "tiny-qwen2-trained"
TINY = ROOT / "models" / "tiny-qwen2-chat"
REGENERATE = "python -m pipeline.trained models/tiny-qwen2-trained"
# Measured 69.72 (transformers 5.23, torch 2.13); a unigram model of the training text scores
# 364.5 and the tiny random model (models/tiny-qwen2-chat) about 225,000.
MAX_HELDOUT_PERPLEXITY = 75.0


@pytest.fixture(scope="module")
def record():
    return json.loads((SHIPPED / "training.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(SHIPPED)


@pytest.fixture(scope="module")
def heldout(tokenizer):
    return trained.heldout_ids(tokenizer)


def _load(folder: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def test_heldout_perplexity_is_worth_measuring(heldout, record, tokenizer):
    _, ppl, scored = trained.perplexity(_load(SHIPPED), heldout)
    assert scored == len(heldout) - 1
    assert ppl < MAX_HELDOUT_PERPLEXITY, f"held-out perplexity {ppl:.2f}: regenerate with `{REGENERATE}`?"
    assert math.isclose(ppl, record["results"]["heldout_perplexity"], rel_tol=1e-3)

    # Far better than the bars: token frequencies of the training text, and random weights.
    counts, total = Counter(), 0
    for path in trained.TRAIN_FILES:
        ids = tokenizer(path.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
        counts.update(ids)
        total += len(ids)
    vocab = len(tokenizer)
    unigram = math.exp(-sum(math.log((counts[t] + 1) / (total + vocab)) for t in heldout[1:]) / (len(heldout) - 1))
    assert ppl < unigram / 4, (ppl, unigram)
    _, random_ppl, _ = trained.perplexity(_load(TINY), heldout)
    assert ppl < random_ppl / 1000, (ppl, random_ppl)


def test_record_matches_the_repository(record):
    data = record["data"]
    files = {**data["train"], **data["heldout"]}
    assert sorted(files) == sorted(p.relative_to(ROOT).as_posix() for p in (*trained.TRAIN_FILES, trained.HELDOUT))
    for name, recorded in files.items():
        content = (ROOT / name).read_bytes()
        assert recorded == {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}, (
            f"{name} changed since the shipped model was trained: regenerate with `{REGENERATE}`")
    assert record["command"] == REGENERATE
    assert (record["seed"], record["steps"], record["batch_size"], record["seq_len"]) == (
        0, trained.STEPS, trained.BATCH_SIZE, trained.SEQ_LEN)
    assert record["optimizer"]["lr"] == trained.LR and record["threads"] == trained.THREADS
    assert set(record["versions"]) >= {"torch", "transformers"}
    assert record["results"]["heldout_perplexity"] < record["results"]["heldout_unigram_perplexity"] / 4


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                  "chat_template.jinja", "generation_config.json"])
def test_tokenizer_and_template_are_the_tiny_qwen2s(name):
    assert (SHIPPED / name).read_bytes() == (TINY / name).read_bytes()


def test_special_tokens_and_chat_template(tokenizer):
    config = json.loads((SHIPPED / "config.json").read_text())
    ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")]
    assert ids == [1024, 1025, 1026] and len(tokenizer) == config["vocab_size"] == 1027
    assert config["eos_token_id"] == 1026 and config["bos_token_id"] == 1024
    assert tokenizer.chat_template == tiny.chat_template("qwen2")


def test_shape_fits_the_builder_and_the_repository():
    config = json.loads((SHIPPED / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["dtype"] == "float32"
    assert {k: config[k] for k in trained.SHAPE} == trained.SHAPE
    assert (config["hidden_size"] // config["num_attention_heads"]) % 16 == 0
    assert config["vocab_size"] not in (config["hidden_size"], config["intermediate_size"])
    assert config["tie_word_embeddings"] is False
    assert config["max_position_embeddings"] == trained.SEQ_LEN  # trained on its whole context
    assert sum(p.stat().st_size for p in SHIPPED.iterdir()) < 5_000_000


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def test_heldout_text_is_not_trained_on():
    # No run of 8 words of a held-out passage occurs in the training text (titles aside: they
    # share "after the translation of ...").
    def bodies(path):
        return [body for _, body in trained.sections(path.read_text(encoding="utf-8"))]

    seen = set()
    for path in trained.TRAIN_FILES:
        for body in bodies(path):
            w = _words(body)
            seen.update(tuple(w[i:i + 8]) for i in range(len(w) - 7))
    for body in bodies(trained.HELDOUT):
        w = _words(body)
        shared = [" ".join(w[i:i + 8]) for i in range(len(w) - 7) if tuple(w[i:i + 8]) in seen]
        assert not shared, shared[:3]
    titles = {t for path in trained.TRAIN_FILES for t, _ in trained.sections(path.read_text(encoding="utf-8"))}
    assert not titles & {t for t, _ in trained.sections(trained.HELDOUT.read_text(encoding="utf-8"))}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "a"
    lines = []
    results = trained.make_trained_model(out, steps=3, log=lines.append)
    return out, results, lines


def test_a_short_training_writes_a_complete_folder(smoke):
    out, results, lines = smoke
    assert len(lines) == 3 and lines[-1].startswith("step    3/3  loss ")
    assert {"train_loss", "train_perplexity", "heldout_loss", "heldout_perplexity", "heldout_unigram_perplexity",
            "train_seconds", "wall_seconds"} <= set(results)
    assert math.isclose(results["heldout_perplexity"], math.exp(results["heldout_loss"]), rel_tol=1e-3)
    record = json.loads((out / "training.json").read_text())
    assert record["steps"] == 3 and record["results"] == results
    assert record["data"] == json.loads((SHIPPED / "training.json").read_text())["data"]
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (out / name).is_file(), name
    _load(out)


def test_training_is_deterministic(smoke, tmp_path):
    out, results, _ = smoke
    again = trained.make_trained_model(tmp_path, steps=3, log=lambda line: None)
    assert (tmp_path / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    assert again["heldout_loss"] == results["heldout_loss"]


@pytest.mark.slow
@pytest.mark.parametrize("precision, max_increase_pct", [("fp32", 0.01), ("int8", 0.5), ("int4", 3.0)])
def test_builds_lose_little_to_quantization(tmp_path, precision, max_increase_pct):
    # The recipe's evaluate pass scores the build and the shipped model on heldout.txt.
    out = tmp_path / precision
    result = run_cli("build", f"recipes/trained-qwen2-{precision}.yaml", "--output", str(out))
    assert result.returncode == 0, result.stderr + result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    ppl = metrics["perplexity"]
    assert ppl["text"] == "pipeline/data/heldout.txt" and ppl["same_token_ids"] is True
    assert math.isclose(ppl["source"], json.loads((SHIPPED / "training.json").read_text())["results"]
                        ["heldout_perplexity"], rel_tol=1e-3)
    assert ppl["increase_pct"] < max_increase_pct
    if precision == "fp32":
        assert abs(ppl["increase_pct"]) < 0.01 and metrics["parity"]["top1_agreement"] == 1.0
    else:  # visible, not free
        assert metrics["parity"]["kl_divergence"] > 1e-6
