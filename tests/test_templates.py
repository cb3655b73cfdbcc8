"""Foundry PromptTemplate derivation against real chat templates.

tests/data/chat_templates/ holds byte-exact copies of the upstream templates:
- qwen2.5-instruct.jinja: Qwen/Qwen2.5-*-Instruct tokenizer_config.json "chat_template", as
  llama.cpp ships it (models/templates/Qwen-Qwen2.5-7B-Instruct.jinja); equal to the JSON value
  quoted in gorilla's BFCL Qwen handler (bfcl/model_handler/local_inference/qwen.py).
- llama-3.2-instruct.jinja: meta-llama/Llama-3.2-3B-Instruct, from llama.cpp
  (models/templates/meta-llama-Llama-3.2-3B-Instruct.jinja); the 1B-Instruct one is the same.
- phi-3-mini-4k-instruct.jinja: microsoft/Phi-3-mini-4k-instruct tokenizer_config.json
  "chat_template", as guidance-ai/guidance's chat.py records it (phi3_mini_template).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import PackageError
from pipeline.packaging.templates import (
    derive_prompt_template,
    fill,
    load_tokenizer_template,
    render_chat_template,
)

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = Path(__file__).parent / "data" / "chat_templates"
TINY = ROOT / "models" / "tiny-qwen2-chat"

# Each model's special tokens, as its tokenizer_config.json names them.
SPECIAL_TOKENS = {
    "qwen2.5-instruct": dict(bos_token=None, eos_token="<|im_end|>", unk_token=None, pad_token="<|endoftext|>"),
    "phi-3-mini-4k-instruct": dict(
        bos_token="<s>", eos_token="<|endoftext|>", unk_token="<unk>", pad_token="<|endoftext|>"
    ),
    "llama-3.2-instruct": dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", unk_token=None, pad_token=None),
}
REAL = sorted(SPECIAL_TOKENS)

SYSTEM = {"role": "system", "content": "You answer in {json} only.\nNo prose."}
CONVERSATIONS = {
    "system+user": [SYSTEM, {"role": "user", "content": "What is {x}?\nTell me."}],
    "multi-turn": [
        SYSTEM,
        {"role": "user", "content": "Hi {there}"},
        {"role": "assistant", "content": "Hello!\n{\"a\": 1}"},
        {"role": "user", "content": "Say {Content} twice\n\nthen stop."},
    ],
    "long": [
        SYSTEM,
        *[
            {"role": role, "content": f"turn {i} {{{i}}}\nline"}
            for i in range(6)
            for role in ("user", "assistant")
        ],
        {"role": "user", "content": "last"},
    ],
}


def _template(name: str) -> str:
    return (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")


def _render(name, messages, gen=True):
    return render_chat_template(
        _template(name), messages, add_generation_prompt=gen, special_tokens=SPECIAL_TOKENS[name]
    )


@pytest.fixture(scope="module")
def derived():
    return {name: derive_prompt_template(_template(name), SPECIAL_TOKENS[name]) for name in REAL}


@pytest.mark.parametrize("name", REAL)
def test_real_templates_are_exact(derived, name):
    result = derived[name]
    assert result.exact, result.notes
    assert set(result.template) == {"system", "user", "assistant", "prompt"}
    for part in result.template.values():
        assert part.count("{Content}") == 1


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("name", REAL)
def test_fill_equals_render(derived, name, conversation):
    messages = CONVERSATIONS[conversation]
    assert fill(derived[name].template, messages) == _render(name, messages)


@pytest.mark.parametrize("name", REAL)
def test_system_then_prompt_is_the_render(derived, name):
    t = derived[name].template
    system, user = "S {a} b\nc", "U {{b}} {Content}\n\nd"
    composed = t["system"].replace("{Content}", system) + t["prompt"].replace("{Content}", user)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    assert composed == _render(name, messages)


def test_qwen_values(derived):
    result = derived["qwen2.5-instruct"]
    assert result.template == {
        "system": "<|im_start|>system\n{Content}<|im_end|>\n",
        "user": "<|im_start|>user\n{Content}<|im_end|>\n",
        "assistant": "<|im_start|>assistant\n{Content}<|im_end|>\n",
        "prompt": "<|im_start|>user\n{Content}<|im_end|>\n<|im_start|>assistant\n",
    }
    # Without a system message Qwen2.5 injects its default one; Foundry cannot, so it is noted.
    assert any("You are Qwen, created by Alibaba Cloud" in note for note in result.notes)


def test_phi3_values(derived):
    # The trailing eos_token Phi-3 renders without a generation prompt belongs to no part.
    assert derived["phi-3-mini-4k-instruct"].template == {
        "system": "<|system|>\n{Content}<|end|>\n",
        "user": "<|user|>\n{Content}<|end|>\n",
        "assistant": "<|assistant|>\n{Content}<|end|>\n",
        "prompt": "<|user|>\n{Content}<|end|>\n<|assistant|>\n",
    }
    assert derived["phi-3-mini-4k-instruct"].notes == ()


def test_llama_values(derived):
    result = derived["llama-3.2-instruct"]
    t = result.template
    assert t["system"].startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert "Cutting Knowledge Date: December 2023\nToday Date: " in t["system"]
    assert t["system"].endswith("\n\n{Content}<|eot_id|>")
    assert t["user"] == "<|start_header_id|>user<|end_header_id|>\n\n{Content}<|eot_id|>"
    assert t["assistant"] == "<|start_header_id|>assistant<|end_header_id|>\n\n{Content}<|eot_id|>"
    assert t["prompt"] == t["user"] + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    notes = " ".join(result.notes)
    for expected in ("current date", "strips whitespace", "bos_token", "without a system message"):
        assert expected in notes


def test_fill_keeps_braces_and_uses_prompt_for_last_user_only():
    t = {"system": "S[{Content}]", "user": "U[{Content}]", "assistant": "A[{Content}]", "prompt": "P[{Content}]>"}
    messages = [
        {"role": "system", "content": "{0}"},
        {"role": "user", "content": "{Content}"},
        {"role": "assistant", "content": "{}"},
        {"role": "user", "content": "a\n{b}"},
    ]
    assert fill(t, messages) == "S[{0}]U[{Content}]A[{}]P[a\n{b}]>"
    with pytest.raises(ValueError, match="tool"):
        fill(t, [{"role": "tool", "content": "x"}])


# Gemma-2's template: no system role, alternating roles enforced with raise_exception.
GEMMA_STYLE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)


def test_template_without_system_role_is_approximate_not_a_crash():
    result = derive_prompt_template(GEMMA_STYLE, {"bos_token": "<bos>", "eos_token": "<eos>"})
    assert not result.exact
    assert any("System role not supported" in note for note in result.notes)
    # Every user part repeats <bos>; the multi-turn check says where that goes wrong.
    assert any(note.startswith("user + assistant + user:") for note in result.notes)
    assert result.template["assistant"] == "<start_of_turn>model\n{Content}<end_of_turn>\n"
    assert result.template["prompt"] == "<bos><start_of_turn>user\n{Content}<end_of_turn>\n<start_of_turn>model\n"
    # A single user turn still composes exactly.
    messages = [{"role": "user", "content": "hi {x}"}]
    assert fill(result.template, messages) == render_chat_template(
        GEMMA_STYLE, messages, add_generation_prompt=True, special_tokens={"bos_token": "<bos>"}
    )


def test_template_that_drops_content_is_approximate_not_a_crash():
    result = derive_prompt_template(
        "{% for m in messages %}<{{ m.role }}>{% endfor %}{% if add_generation_prompt %}<go>{% endif %}", {}
    )
    assert not result.exact
    assert any("0 times" in note for note in result.notes)


def test_generation_tag_and_namespace_render():
    template = (
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
        "{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}"
        "{% else %}{{ m.content | tojson }}{% endif %}{% endfor %}{{ ns.n }}"
    )
    messages = [{"role": "user", "content": "é<"}, {"role": "assistant", "content": "ok"}]
    assert render_chat_template(template, messages, add_generation_prompt=False, special_tokens={}) == '"é<"ok2'


def test_unparsable_template_is_a_package_error():
    with pytest.raises(PackageError, match="does not parse"):
        derive_prompt_template("{% for %}", {})


# ---------------------------------------------------------------------------------------------
# Reading tokenizer folders


def test_load_tiny_model_template():
    template, special = load_tokenizer_template(TINY)
    assert template == _template("qwen2.5-instruct")
    assert special == {"bos_token": None, "eos_token": "<|im_end|>", "unk_token": None, "pad_token": "<|endoftext|>"}


def test_load_from_tokenizer_config_variants(tmp_path):
    config = {
        "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}],
        "bos_token": {"content": "<s>", "lstrip": False},
        "eos_token": "</s>",
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tokens_map = {"unk_token": {"content": "<unk>"}, "eos_token": "X"}
    (tmp_path / "special_tokens_map.json").write_text(json.dumps(tokens_map))
    template, special = load_tokenizer_template(tmp_path)
    assert template == "D"
    assert special == {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None}

    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "plain"}))
    assert load_tokenizer_template(tmp_path)[0] == "plain"
    (tmp_path / "chat_template.jinja").write_text("from file")
    assert load_tokenizer_template(tmp_path)[0] == "from file"


def test_load_empty_and_broken_folders(tmp_path):
    nothing = dict.fromkeys(("bos_token", "eos_token", "unk_token", "pad_token"))
    assert load_tokenizer_template(tmp_path) == (None, nothing)
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(PackageError, match="not valid JSON"):
        load_tokenizer_template(tmp_path)


# ---------------------------------------------------------------------------------------------
# The renderer is transformers' renderer


@pytest.fixture(scope="module")
def tiny_tokenizer():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(TINY)


@pytest.mark.parametrize("gen", [True, False])
@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS) + ["no-system"])
@pytest.mark.parametrize("name", REAL)
def test_renderer_matches_transformers(tiny_tokenizer, name, conversation, gen):
    messages = CONVERSATIONS[conversation] if conversation != "no-system" else [{"role": "user", "content": " hi "}]
    special = {k: v for k, v in SPECIAL_TOKENS[name].items() if v is not None}
    ours = render_chat_template(_template(name), messages, add_generation_prompt=gen, special_tokens=special)
    theirs = tiny_tokenizer.apply_chat_template(
        messages, chat_template=_template(name), tokenize=False, add_generation_prompt=gen, **special
    )
    assert ours == theirs


def test_renderer_matches_transformers_on_the_tiny_model(tiny_tokenizer):
    template, special = load_tokenizer_template(TINY)
    for messages in [*CONVERSATIONS.values(), [{"role": "user", "content": "only me"}]]:
        ours = render_chat_template(template, messages, add_generation_prompt=True, special_tokens=special)
        assert ours == tiny_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
