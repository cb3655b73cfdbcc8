"""The tiny test model: deterministic, equal to the shipped copy, a real tokenizer and template."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file  # noqa: E402

from pipeline import tiny  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "tiny-qwen2-chat"
QWEN25_TEMPLATE = Path(__file__).parent / "data" / "chat_templates" / "qwen2.5-instruct.jinja"
REGENERATE = "python -m pipeline.tiny models/tiny-qwen2-chat"
PROMPTS = ["Hello! Who are you?", "Tell me a fable about a fox.", "What is the capital of France?"]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    return tiny.make_tiny_model(tmp_path_factory.mktemp("tiny") / "a")


def test_two_generations_are_byte_identical(fresh, tmp_path):
    tiny.main([str(tmp_path / "b")])  # the CLI path: python -m pipeline.tiny OUT_DIR
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (fresh / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_seed_changes_weights_not_tokenizer(fresh, tmp_path):
    other = tiny.make_tiny_model(tmp_path / "seed1", seed=1)
    assert (other / "tokenizer.json").read_bytes() == (fresh / "tokenizer.json").read_bytes()
    assert (other / "model.safetensors").read_bytes() != (fresh / "model.safetensors").read_bytes()


def _written_by_other_transformers() -> str | None:
    shipped = json.loads((SHIPPED / "config.json").read_text())["transformers_version"]
    if shipped != transformers.__version__:
        return f"shipped model written by transformers {shipped}, installed {transformers.__version__}"
    return None


@pytest.mark.parametrize("name", ["tokenizer.json", "config.json", "tokenizer_config.json", "chat_template.jinja"])
def test_shipped_files_equal_a_fresh_generation(fresh, name):
    if (fresh / name).read_bytes() != (SHIPPED / name).read_bytes():
        if reason := _written_by_other_transformers():
            pytest.skip(reason)
        pytest.fail(f"models/tiny-qwen2-chat/{name} is stale: regenerate with `{REGENERATE}`")


def test_shipped_weights_equal_a_fresh_generation(fresh):
    ours, shipped = load_file(fresh / "model.safetensors"), load_file(SHIPPED / "model.safetensors")
    assert ours.keys() == shipped.keys()
    stale = [k for k in ours if not torch.equal(ours[k], shipped[k])]
    if stale:
        if reason := _written_by_other_transformers():
            pytest.skip(reason)
        pytest.fail(f"tensors {stale} differ: regenerate with `{REGENERATE}`")


def test_shape_fits_the_builder():
    config = json.loads((SHIPPED / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert (config["hidden_size"] // config["num_attention_heads"]) % 16 == 0
    assert config["num_attention_heads"] % config["num_key_value_heads"] == 0
    assert config["vocab_size"] not in (config["hidden_size"], config["intermediate_size"])
    assert config["num_hidden_layers"] == 2
    assert config["max_position_embeddings"] in (512, 1024)
    assert config["tie_word_embeddings"] is False
    assert sum(p.stat().st_size for p in SHIPPED.iterdir()) < 3_000_000


def test_special_tokens_and_eos():
    tok = transformers.AutoTokenizer.from_pretrained(SHIPPED)
    config = json.loads((SHIPPED / "config.json").read_text())
    generation = json.loads((SHIPPED / "generation_config.json").read_text())
    tokenizer_config = json.loads((SHIPPED / "tokenizer_config.json").read_text())
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")}
    assert list(ids.values()) == [1024, 1025, 1026]
    assert len(tok) == config["vocab_size"] == 1027
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.bos_token is None
    assert tokenizer_config["tokenizer_class"] == "Qwen2Tokenizer"
    assert tokenizer_config["bos_token"] is None and tokenizer_config["add_bos_token"] is False
    assert config["eos_token_id"] == ids["<|im_end|>"]
    assert generation["eos_token_id"] == [ids["<|im_end|>"], ids["<|endoftext|>"]]
    assert generation["pad_token_id"] == ids["<|endoftext|>"]


def test_tokenizer_round_trips():
    from tokenizers import Tokenizer

    tok = transformers.AutoTokenizer.from_pretrained(SHIPPED)
    raw = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))
    corpus = tiny.CORPUS.read_text(encoding="utf-8")
    samples = [
        corpus[:2000],
        "Hello, {world}!\n\ttabs  and  spaces",
        "Ünïcödé 日本語 😀",
        "<|im_start|>user\nhi<|im_end|>",
    ]
    for text in samples:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == raw.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids) == text
    # Merges were learned: common words are single tokens, special tokens are never split.
    assert len(tok(" the", add_special_tokens=False)["input_ids"]) == 1
    assert tok("<|im_start|><|im_end|>", add_special_tokens=False)["input_ids"] == [1025, 1026]


def test_chat_template_is_qwen25():
    real = QWEN25_TEMPLATE.read_text(encoding="utf-8")
    assert tiny.chat_template("qwen2") == real
    assert (SHIPPED / "chat_template.jinja").read_text(encoding="utf-8") == real
    assert json.loads((SHIPPED / "tokenizer_config.json").read_text())["chat_template"] == real
    tok = transformers.AutoTokenizer.from_pretrained(SHIPPED)
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_unknown_family_lists_the_supported_ones(tmp_path):
    supported = ", ".join(sorted(tiny.FAMILIES))
    with pytest.raises(ValueError, match=re.escape(f"'llama' is not supported (supported: {supported})")):
        tiny.make_tiny_model(tmp_path, family="llama")


def _greedy(model, tok, prompt):
    ids = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=16)
    return ids, out[0, len(ids):].tolist()


@pytest.fixture(scope="module")
def shipped_model():
    tok = transformers.AutoTokenizer.from_pretrained(SHIPPED)
    model = transformers.AutoModelForCausalLM.from_pretrained(SHIPPED, dtype=torch.float32).eval()
    return model, tok


def test_greedy_output_is_varied(shipped_model):
    # A parity test over 16 greedy tokens means nothing if the model repeats one token.
    for prompt in PROMPTS:
        _, new = _greedy(*shipped_model, prompt)
        assert len(new) == 16 and len(set(new)) >= 12, new
