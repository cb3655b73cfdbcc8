"""Every model family Foundry Local users bring, on a tiny model carrying that family's real chat
template and special tokens (pipeline.tiny.FAMILIES): the PromptTemplate we derive, the token ids
ONNX Runtime GenAI then feeds the model, what is approximated and said so, and tokenizers without a
chat template (package.foundry_local.template_family).

Template-level checks need no ONNX model: ONNX Runtime GenAI's tokenizer loads from the tokenizer
files plus a genai_config.json. The `slow` tests build some families for real.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from conftest import REPO, og_greedy, tiny_recipe

from pipeline import runner, tiny
from pipeline.errors import PackageError, RecipeError
from pipeline.packaging.foundry import package, plan_prompt
from pipeline.packaging.templates import (
    CHAT_TEMPLATES_DIR,
    TEMPLATE_FAMILIES,
    derive_prompt_template,
    family_chat_template,
    fill,
    render_chat_template,
)

transformers = pytest.importorskip("transformers")
og = pytest.importorskip("onnxruntime_genai")

FAMILIES = sorted(tiny.FAMILIES)

SYSTEM = {"role": "system", "content": "You answer in {json} only.\nNo prose."}
TURNS = [
    {"role": "user", "content": "Hi {there}"},
    {"role": "assistant", "content": "Hello!\n{\"a\": 1}"},
    {"role": "user", "content": "Say {Content} twice\n\nthen stop."},
]
CONVERSATIONS = {
    "system + user": [SYSTEM, {"role": "user", "content": "What is {x}?\nTell me."}],
    "multi-turn": [SYSTEM, *TURNS],
    "long": [SYSTEM, *[{"role": r, "content": f"turn {i} {{{i}}}\nline"} for i in range(5)
                       for r in ("user", "assistant")], {"role": "user", "content": "last"}],
    "user": [{"role": "user", "content": "Only {me}\nhere."}],
    "user multi-turn": TURNS,
}
WITH_SYSTEM = ("system + user", "multi-turn", "long")
WITHOUT_SYSTEM = ("user", "user multi-turn")


def _today(fmt: str) -> str:
    return datetime.now().strftime(fmt)


CHATML = {
    "system": "<|im_start|>system\n{Content}<|im_end|>\n",
    "user": "<|im_start|>user\n{Content}<|im_end|>\n",
    "assistant": "<|im_start|>assistant\n{Content}<|im_end|>\n",
    "prompt": "<|im_start|>user\n{Content}<|im_end|>\n<|im_start|>assistant\n",
}
PHI3 = {
    "system": "<|system|>\n{Content}<|end|>\n",
    "user": "<|user|>\n{Content}<|end|>\n",
    "assistant": "<|assistant|>\n{Content}<|end|>\n",
    "prompt": "<|user|>\n{Content}<|end|>\n<|assistant|>\n",
}
LLAMA3_TURNS = {
    "user": "<|start_header_id|>user<|end_header_id|>\n\n{Content}<|eot_id|>",
    "assistant": "<|start_header_id|>assistant<|end_header_id|>\n\n{Content}<|eot_id|>",
    "prompt": "<|start_header_id|>user<|end_header_id|>\n\n{Content}<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n",
}
LLAMA3_SYSTEM = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                 "Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n{{Content}}<|eot_id|>")
GEMMA = {
    "system": "<bos><start_of_turn>user\n{Content}<end_of_turn>\n",
    "user": "<bos><start_of_turn>user\n{Content}<end_of_turn>\n",
    "assistant": "<start_of_turn>model\n{Content}<end_of_turn>\n",
    "prompt": "<bos><start_of_turn>user\n{Content}<end_of_turn>\n<start_of_turn>model\n",
}


def expected_template(family: str) -> dict[str, str]:
    """The PromptTemplate each family must get, literally (dates: the day the test runs)."""
    return {
        "qwen2": CHATML,
        "qwen3": CHATML,
        "smollm3": {**CHATML, "system": "<|im_start|>system\n## Metadata\n\nKnowledge Cutoff Date: June 2025\n"
                                        f"Today Date: {_today('%d %B %Y')}\nReasoning Mode: /think\n\n"
                                        "## Custom Instructions\n\n{Content}\n\n"},
        "phi3": PHI3,
        "phi3.5": PHI3,
        "phi4-mini": {"system": "<|system|>{Content}<|end|>", "user": "<|user|>{Content}<|end|>",
                      "assistant": "<|assistant|>{Content}<|end|>", "prompt": "<|user|>{Content}<|end|><|assistant|>"},
        "llama3.1": {"system": LLAMA3_SYSTEM.format(date="26 Jul 2024"), **LLAMA3_TURNS},
        "llama3.2": {"system": LLAMA3_SYSTEM.format(date=_today("%d %b %Y")), **LLAMA3_TURNS},
        # The system message becomes a user turn of its own (the template folds it into the first).
        "mistral-v0.2": {"system": "<s> [INST] {Content} [/INST]", "user": "<s> [INST] {Content} [/INST]",
                         "assistant": " {Content}</s>", "prompt": "<s> [INST] {Content} [/INST]"},
        "gemma2": GEMMA,
        "gemma3": GEMMA,
        "deepseek-r1": {"system": "<｜begin▁of▁sentence｜>{Content}", "user": "<｜User｜>{Content}",
                        "assistant": "<｜Assistant｜>{Content}<｜end▁of▁sentence｜>",
                        "prompt": "<｜User｜>{Content}<｜Assistant｜><think>\n"},
    }[family]


# Whether system+prompt and multi-turn fills equal the template's render, and what the notes must
# say (each string must appear in some note).
EXACT = {f: True for f in FAMILIES} | {"mistral-v0.2": False, "gemma2": False, "gemma3": False}
NOTES = {
    "qwen2": ["inserts '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud."],
    "qwen3": ["drops the reasoning (<think>...</think>) of earlier assistant messages",
              "switches reasoning off with enable_thinking=False"],
    "smollm3": ["You are a helpful AI assistant named SmolLM", "writes the current date",
                "switches reasoning off with enable_thinking=False", "reads '/no_think' in a system message"],
    "phi3": [],
    "phi3.5": [],
    "phi4-mini": [],
    "llama3.1": ["Today Date: 26 Jul 2024\\n\\n<|eot_id|>' before the first turn",
                 "an empty system message gives exactly the template's render", "strips whitespace",
                 "bos_token '<|begin_of_text|>' opens the system part"],
    "llama3.2": ["before the first turn", "an empty system message gives exactly the template's render",
                 "writes the current date", "bos_token '<|begin_of_text|>' opens the system part"],
    "mistral-v0.2": ["gives a system message no turn of its own (SYSTEM, then USER, renders "
                     "'<s> [INST] SYSTEM\\n\\nUSER [/INST]')", "a system message becomes a user turn of its own",
                     "bos_token '<s>', which opens both the system and the prompt part, appears twice",
                     "user + assistant + user: the chat template writes bos_token '<s>' once"],
    "gemma2": ["refuses a system message (System role not supported)",
               "a system message becomes a user turn of its own",
               "user + assistant + user: the chat template writes bos_token '<bos>' once", "strips whitespace"],
    "gemma3": ["gives a system message no turn of its own (SYSTEM, then USER, renders "
               "'<bos><start_of_turn>user\\nSYSTEM\\n\\nUSER<end_of_turn>\\n<start_of_turn>model\\n')",
               "a system message becomes a user turn of its own",
               "user + assistant + user: the chat template writes bos_token '<bos>' once"],
    "deepseek-r1": ["the prompt lacks the bos_token '<｜begin▁of▁sentence｜>'",
                    "an empty system message gives exactly the template's render",
                    "drops the reasoning (<think>...</think>) of earlier assistant messages",
                    "ends by opening a reasoning block ('<think>\\n')"],
}

# Foundry Local's own catalog strings (docs/reference: foundry-local.md) and how ours relate: the
# catalog leaves out the newline the chat templates write after each turn, and DeepSeek's catalog
# prompt stops before the "<think>\n" the R1 template's generation prompt opens.
CATALOG = {
    "chatml": {"system": "<|im_start|>system\n{Content}<|im_end|>", "user": "<|im_start|>user\n{Content}<|im_end|>",
               "assistant": "<|im_start|>assistant\n{Content}<|im_end|>",
               "prompt": "<|im_start|>user\n{Content}<|im_end|>\n<|im_start|>assistant"},
    "phi3": {"system": "<|system|>\n{Content}<|end|>", "user": "<|user|>\n{Content}<|end|>",
             "assistant": "<|assistant|>\n{Content}<|end|>", "prompt": "<|user|>\n{Content}<|end|>\n<|assistant|>"},
    "phi4-mini": {"system": "<|system|>{Content}<|end|>", "user": "<|user|>{Content}<|end|>",
                  "assistant": "<|assistant|>{Content}<|end|>", "prompt": "<|user|>{Content}<|end|><|assistant|>"},
    "mistral": {"system": "<s>", "user": "[INST]\n{Content}\n[/INST]", "assistant": "{Content}</s>",
                "prompt": "[INST]\n{Content}\n[/INST]"},
    "deepseek-r1": {"assistant": "{Content}", "prompt": "<｜User｜>{Content}<｜Assistant｜>"},
}


# ---------------------------------------------------------------------------------------------
# Fixtures: tiny models per family, made on first use and kept for the session


@pytest.fixture(scope="session")
def family_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    made: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in made:
            made[family] = tiny.make_tiny_model(root / family, family=family)
        return made[family]

    return make


@pytest.fixture(scope="session")
def hf_tokenizer(family_model):
    loaded = {}

    def load(family: str):
        if family not in loaded:
            loaded[family] = transformers.AutoTokenizer.from_pretrained(family_model(family))
        return loaded[family]

    return load


@pytest.fixture(scope="session")
def og_tokenizer(family_model, tmp_path_factory):
    """ONNX Runtime GenAI's tokenizer for a family, without building the model: the tokenizer
    files plus a genai_config.json that names no file it needs."""
    root = tmp_path_factory.mktemp("og-tokenizers")
    loaded = {}

    def load(family: str):
        if family not in loaded:
            source, folder = family_model(family), root / family
            folder.mkdir()
            for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                shutil.copy(source / name, folder / name)
            config = json.loads((source / "config.json").read_text())
            heads = config["num_attention_heads"]
            (folder / "genai_config.json").write_text(json.dumps({"model": {
                "type": "llama", "bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
                "pad_token_id": config["eos_token_id"], "vocab_size": config["vocab_size"], "context_length": 512,
                "decoder": {"filename": "absent.onnx", "head_size": config["hidden_size"] // heads,
                            "hidden_size": config["hidden_size"], "num_attention_heads": heads,
                            "num_hidden_layers": config["num_hidden_layers"],
                            "num_key_value_heads": config["num_key_value_heads"]}}}))
            loaded[family] = og.Tokenizer(str(folder))
        return loaded[family]

    return load


@pytest.fixture(scope="session")
def plans(family_model):
    cache = {}

    def plan(family: str):
        if family not in cache:
            cache[family] = plan_prompt(family_model(family), "auto")
        return cache[family]

    return plan


def _reference(hf, messages):
    """transformers' apply_chat_template: the text and the ids the model was trained on."""
    text = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    return text, list(ids)


def _refuses(hf, messages) -> bool:
    try:
        _reference(hf, messages)
        return False
    except Exception:  # jinja2's TemplateError from raise_exception (Gemma 2 and a system message)
        return True


# ---------------------------------------------------------------------------------------------
# The tiny models carry the real thing


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_carries_the_real_template_and_tokens(family_model, hf_tokenizer, family):
    fam, folder, hf = tiny.FAMILIES[family], family_model(family), hf_tokenizer(family)
    real = (CHAT_TEMPLATES_DIR / fam.chat_template).read_text(encoding="utf-8")
    assert (folder / "chat_template.jinja").read_text(encoding="utf-8") == real
    assert json.loads((folder / "tokenizer_config.json").read_text())["chat_template"] == real
    assert hf.bos_token == fam.bos_token and hf.eos_token == fam.eos_token
    for token in fam.special_tokens + fam.added_tokens:  # each one id, never spelled out
        assert len(hf(token, add_special_tokens=False)["input_ids"]) == 1, token
    config = json.loads((folder / "config.json").read_text())
    assert (config["hidden_size"] // config["num_attention_heads"]) % 16 == 0
    assert config["vocab_size"] not in (config["hidden_size"], config["intermediate_size"])


def test_every_shipped_template_has_a_source_and_is_used():
    files = {p.name for p in CHAT_TEMPLATES_DIR.glob("*.jinja")}
    family_files = {f.file for f in TEMPLATE_FAMILIES.values()}
    assert files == {f.chat_template for f in tiny.FAMILIES.values()} | family_files
    assert all(f.source and f.model for f in TEMPLATE_FAMILIES.values())
    for name in files - family_files:
        assert f"- {name}:" in tiny.__doc__, f"{name}: say in pipeline/tiny.py where it was copied from"


# ---------------------------------------------------------------------------------------------
# The PromptTemplate per family


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_template_values(plans, family):
    plan = plans(family)
    assert plan.template == expected_template(family)
    assert plan.origin == "chat_template"
    assert plan.exact is EXACT[family], plan.notes


@pytest.mark.parametrize("family", FAMILIES)
def test_notes_say_what_is_approximated(plans, family):
    notes = "\n".join(plans(family).notes)
    for expected in NOTES[family]:
        assert expected in notes, f"{family}: no note says {expected!r}:\n{notes}"
    if not NOTES[family]:
        assert plans(family).notes == ()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
def test_fill_against_the_chat_template(plans, hf_tokenizer, family, conversation):
    """Exact families: every conversation with a system message renders exactly. All families:
    where the fill differs from the template's render, a note says why."""
    plan, hf, messages = plans(family), hf_tokenizer(family), CONVERSATIONS[conversation]
    if _refuses(hf, messages):
        assert any("refuses a system message" in n for n in plan.notes)
        return
    text, _ = _reference(hf, messages)
    if plan.exact and conversation in WITH_SYSTEM:
        assert fill(plan.template, messages) == text
    elif fill(plan.template, messages) != text:
        notes = " ".join(plan.notes)
        why = {"user": ("before the first turn", "lacks the bos_token"),
               "user multi-turn": ("before the first turn", "lacks the bos_token", "user + assistant + user:")}
        reasons = why.get(conversation, ("a system message becomes a user turn of its own",))
        assert any(r in notes for r in reasons), f"{family}, {conversation}: no note explains\n{notes}"


CATALOG_FAMILY = {"qwen2": "chatml", "qwen3": "chatml", "smollm3": "chatml", "phi3": "phi3", "phi3.5": "phi3",
                  "phi4-mini": "phi4-mini", "mistral-v0.2": "mistral", "deepseek-r1": "deepseek-r1"}


@pytest.mark.parametrize("family", sorted(CATALOG_FAMILY))
def test_catalog_values(plans, hf_tokenizer, family):
    """Where Foundry Local's catalog has strings for the family (Llama 3 and Gemma it has not),
    ours differ only as the chat template says they must."""
    ours, catalog = plans(family).template, CATALOG[CATALOG_FAMILY[family]]
    if CATALOG_FAMILY[family] in ("chatml", "phi3"):
        for part, value in catalog.items():
            if family == "smollm3" and part == "system":  # SmolLM3's own header: metadata, left open
                assert ours[part].startswith("<|im_start|>system\n## Metadata") and ours[part] != value + "\n"
            else:
                assert ours[part] == value + "\n", part
    elif family == "phi4-mini":
        assert ours == catalog
    elif family == "deepseek-r1":
        assert ours["prompt"] == catalog["prompt"] + "<think>\n"
        assert ours["assistant"] == "<｜Assistant｜>" + catalog["assistant"] + "<｜end▁of▁sentence｜>"
    else:  # Mistral: the catalog's newlines inside [INST] are in neither v0.2 template; ours render it
        messages = CONVERSATIONS["user"]
        text = _reference(hf_tokenizer(family), messages)[0]
        assert fill(ours, messages) == text != fill(catalog, messages)


def test_smollm3_system_turn_stays_open_as_in_its_template(plans):
    # SmolLM3's template never closes the system turn when no tools are given; we keep that.
    assert not plans("smollm3").template["system"].endswith("<|im_end|>\n")


# ---------------------------------------------------------------------------------------------
# Token ids: what ONNX Runtime GenAI feeds the model


@pytest.mark.parametrize("family", FAMILIES)
def test_token_ids_equal_transformers(plans, hf_tokenizer, og_tokenizer, family):
    """The filled PromptTemplate, encoded by ONNX Runtime GenAI's tokenizer (as Foundry Local
    does), gives transformers' apply_chat_template(tokenize=True) ids: no doubled or missing bos
    in every conversation the notes do not flag."""
    plan, hf, tok = plans(family), hf_tokenizer(family), og_tokenizer(family)
    checked = 0
    for name, messages in CONVERSATIONS.items():
        if _refuses(hf, messages):
            continue
        text, ids = _reference(hf, messages)
        filled = fill(plan.template, messages)
        got = [int(i) for i in tok.encode(filled)]
        assert got == list(hf(filled, add_special_tokens=False)["input_ids"]), f"{name}: tokenizers disagree"
        if filled == text:
            assert got == ids, name
            checked += 1
    assert checked >= (2 if plan.exact else 1)
    # The conversations Foundry Local sends most: one user turn, with a system message where the
    # template takes one; exact families give the model exactly its training-time ids for it.
    first = CONVERSATIONS["system + user" if plan.exact else "user"]
    assert [int(i) for i in tok.encode(fill(plan.template, first))] == _reference(hf, first)[1]


@pytest.mark.parametrize("family", ["llama3.2", "mistral-v0.2", "gemma2", "deepseek-r1", "phi3", "qwen2"])
def test_ort_genai_never_adds_bos(family_model, hf_tokenizer, og_tokenizer, family):
    """Llama 3's post-processor, and Mistral's/Gemma's add_bos_token, make transformers prepend
    bos to plain text; ONNX Runtime GenAI's encode does not (add_special_tokens is off since 0.11,
    so in Foundry Local's 0.14.1 too). apply_chat_template(tokenize=True) does not either: the bos
    comes from the template text alone."""
    fam, hf, tok = tiny.FAMILIES[family], hf_tokenizer(family), og_tokenizer(family)
    plain = "hello world"
    no_specials = hf(plain, add_special_tokens=False)["input_ids"]
    assert [int(i) for i in tok.encode(plain)] == no_specials
    adds = hf(plain)["input_ids"] != no_specials
    assert adds is fam.post_processor_bos
    if fam.bos_token and fam.post_processor_bos:
        bos = hf.convert_tokens_to_ids(fam.bos_token)
        messages = [{"role": "user", "content": plain}]
        assert _reference(hf, messages)[1].count(bos) == 1


# ---------------------------------------------------------------------------------------------
# Tokenizers without a chat template


def _without_template(source: Path, dst: Path) -> Path:
    shutil.copytree(source, dst)
    (dst / "chat_template.jinja").unlink()
    config = json.loads((dst / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (dst / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return dst


def test_families_are_the_schema_enum():
    schema = json.loads((REPO / "schemas" / "recipe.schema.json").read_text())
    enum = schema["properties"]["package"]["properties"]["foundry_local"]["properties"]["template_family"]["enum"]
    assert enum == list(TEMPLATE_FAMILIES)


@pytest.mark.parametrize("family", sorted(TEMPLATE_FAMILIES))
def test_family_templates_are_real_files(family):
    text = family_chat_template(family)
    assert text == (CHAT_TEMPLATES_DIR / TEMPLATE_FAMILIES[family].file).read_text(encoding="utf-8")
    assert "messages" in text


# The tiny model whose tokenizer fits each template family (its special tokens).
FAMILY_MODEL = {"chatml": "qwen3", "phi3": "phi3.5", "phi4-mini": "phi4-mini", "llama3": "llama3.2",
                "mistral-v0.2": "mistral-v0.2", "gemma": "gemma3", "deepseek-r1": "deepseek-r1"}


def test_every_family_has_a_tiny_model():
    assert set(FAMILY_MODEL) == set(TEMPLATE_FAMILIES)
    for family, model in FAMILY_MODEL.items():
        assert tiny.FAMILIES[model].chat_template == TEMPLATE_FAMILIES[family].file


@pytest.mark.parametrize("family", sorted(TEMPLATE_FAMILIES))
def test_no_chat_template_uses_the_family(family_model, plans, tmp_path, family):
    folder = _without_template(family_model(FAMILY_MODEL[family]), tmp_path / "m")
    with pytest.raises(PackageError, match="has no chat template.*template_family"):
        plan_prompt(folder, "auto")
    plan = plan_prompt(folder, "auto", template_family=family)
    assert plan.origin == "template_family"
    assert plan.chat_template == family_chat_template(family)
    assert plan.template == plans(FAMILY_MODEL[family]).template
    assert "the tokenizer has no chat template" in plan.notes[0]
    assert TEMPLATE_FAMILIES[family].model in plan.notes[0]


def test_family_with_foreign_special_tokens_is_refused(family_model, tmp_path):
    folder = _without_template(family_model("llama3.2"), tmp_path / "m")
    with pytest.raises(PackageError, match=r"'chatml' writes <\|im_end\|>, <\|im_start\|>, which this tokenizer"):
        plan_prompt(folder, "auto", template_family="chatml")


def test_tokenizer_template_wins_over_the_family(family_model):
    plan = plan_prompt(family_model("llama3.1"), "auto", template_family="llama3")
    assert plan.origin == "chat_template"
    assert plan.chat_template == (family_model("llama3.1") / "chat_template.jinja").read_text()
    assert "the tokenizer's own chat template is used, not the llama3 family's" in plan.notes[0]
    # Same template: nothing to say.
    same = plan_prompt(family_model("llama3.2"), "auto", template_family="llama3")
    assert not any("family" in n for n in same.notes)
    with pytest.raises(PackageError, match="not both"):
        plan_prompt(family_model("llama3.2"), {"user": "{Content}", "assistant": "{Content}", "prompt": "{Content}"},
                    template_family="llama3")


def test_package_ships_the_family_template(family_model, tmp_path):
    model = _without_template(family_model("gemma3"), tmp_path / "m")
    plan = plan_prompt(model, "auto", template_family="gemma")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "genai_config.json").write_text("{}")
    shutil.copy(model / "tokenizer_config.json", folder / "tokenizer_config.json")
    info = package(folder, model, "tiny-gemma3-int4-generic-cpu", plan)
    assert (folder / "chat_template.jinja").read_text() == family_chat_template("gemma")
    assert json.loads((folder / "tokenizer_config.json").read_text())["chat_template"] == family_chat_template("gemma")
    assert info["PromptTemplate"] == plan.template


def test_recipe_template_family_validation(tmp_path):
    from pipeline.recipe import recipe_from_dict

    base = tiny_recipe("int4")
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(base | {"package": {"foundry_local": {"template_family": "chatm"}}})
    assert ("package.foundry_local.template_family: 'chatm' is not one of chatml, phi3, phi4-mini, llama3, "
            "mistral-v0.2, gemma, deepseek-r1; did you mean 'chatml'?") in str(err.value)
    with pytest.raises(RecipeError, match="give either prompt_template .* or template_family"):
        recipe_from_dict(base | {"package": {"foundry_local": {
            "template_family": "gemma", "prompt_template": {"user": "{Content}", "assistant": "{Content}",
                                                            "prompt": "{Content}"}}}})
    recipe = recipe_from_dict(base | {"package": {"foundry_local": {"template_family": "gemma"}}})
    assert recipe.package["foundry_local"]["template_family"] == "gemma"
    assert "template_family" not in recipe_from_dict(base).package["foundry_local"]  # digests stay as they were


def test_build_without_chat_template_fails_before_converting(family_model, tmp_path):
    from pipeline.cache import Cache
    from pipeline.recipe import recipe_from_dict
    from pipeline.runner import build

    model = _without_template(family_model("llama3.2"), tmp_path / "model")
    recipe = recipe_from_dict(tiny_recipe("int4", model))
    with pytest.raises(PackageError, match="has no chat template.*template_family"):
        build(recipe, output=tmp_path / "out", cache=Cache(tmp_path / "cache"), log=lambda m: None)
    assert not list(tmp_path.rglob("*.onnx")) and not list(tmp_path.rglob("*.onnx.data")), "the builder ran"
    assert not (tmp_path / "out").exists()


RUNNER_PASSES_FAMILY = "template_family" in inspect.getsource(runner.build)


@pytest.mark.slow
@pytest.mark.skipif(not RUNNER_PASSES_FAMILY, reason="pipeline/runner.py does not pass template_family to "
                                                     "plan_prompt yet")
def test_build_without_chat_template_succeeds_with_template_family(family_model, tmp_path):
    from pipeline.recipe import recipe_from_dict
    from pipeline.runner import build

    model = _without_template(family_model("llama3.2"), tmp_path / "model")
    recipe = recipe_from_dict(tiny_recipe("int4", model, package={"foundry_local": {"template_family": "llama3"}}))
    result = build(recipe, output=tmp_path / "out", log=lambda m: None)
    assert (result.folder / "chat_template.jinja").read_text() == family_chat_template("llama3")
    assert result.info["foundry_local"]["prompt_template_origin"] == "template_family"
    assert any("the tokenizer has no chat template" in n for n in result.info["foundry_local"]["notes"])


# ---------------------------------------------------------------------------------------------
# Real builds: a bos-writing family whose tokenizer adds bos itself (Llama 3), one that refuses a
# system message (Gemma 2) and a reasoning one (DeepSeek-R1)

BUILT = ("llama3.2", "gemma2", "deepseek-r1")


@pytest.fixture(scope="session")
def built_family(family_model, tmp_path_factory):
    from pipeline.recipe import recipe_from_dict
    from pipeline.runner import build

    root = tmp_path_factory.mktemp("built-families")
    built = {}

    def get(family: str) -> Path:
        if family not in built:
            recipe = recipe_from_dict(tiny_recipe("int4", family_model(family)) | {"name": f"tiny-{family}"})
            built[family] = build(recipe, output=root / family, log=lambda m: None)
        return built[family]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("family", BUILT)
def test_built_folder_tokens_and_generation(built_family, plans, hf_tokenizer, family):
    result = built_family(family)
    folder, plan, hf = result.folder, plans(family), hf_tokenizer(family)
    info = json.loads((folder / "inference_model.json").read_text())
    assert info["PromptTemplate"] == plan.template
    assert (folder / "chat_template.jinja").read_text() == family_chat_template_of(family)
    recorded = result.info["foundry_local"]
    assert recorded["prompt_template_exact"] is EXACT[family]
    assert [n.split("Today Date")[0] for n in recorded["notes"]] == [n.split("Today Date")[0] for n in plan.notes]

    tokenizer = og.Tokenizer(og.Model(str(folder)))
    first = CONVERSATIONS["system + user" if plan.exact else "user"]
    ids = [int(i) for i in tokenizer.encode(fill(info["PromptTemplate"], first))]
    assert ids == _reference(hf, first)[1]
    bos = hf.convert_tokens_to_ids(hf.bos_token)
    assert ids.count(bos) == 1 and ids[0] == bos
    generated = og_greedy(folder, ids, 8)
    assert len(generated) == 8


FOUNDRY_PYTHON = os.environ.get("PIPELINE_FOUNDRY_PYTHON")


@pytest.mark.slow
@pytest.mark.skipif(not FOUNDRY_PYTHON, reason="set PIPELINE_FOUNDRY_PYTHON (make test does, via make foundry-venv)")
def test_foundry_runtime_adds_no_bos_to_a_llama3_prompt(built_family):
    """Foundry Local's runtime (ONNX Runtime GenAI 0.14.1) encodes the prompt as ours does: the
    Llama 3 tokenizer's bos-adding post-processor is not applied, and its own chat-template
    rendering equals system part + prompt part."""
    import subprocess

    folder = built_family("llama3.2").folder
    r = subprocess.run([FOUNDRY_PYTHON, str(REPO / "pipeline" / "foundry_smoke.py"), str(folder), "Hello", "4"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    ours = [int(i) for i in og.Tokenizer(og.Model(str(folder))).encode(result["prompt"])]
    assert result["prompt_ids"] == ours
    bos = json.loads((folder / "genai_config.json").read_text())["model"]["bos_token_id"]
    assert bos not in result["prompt_ids"]
    assert result["chat_template_render"] == result["prompt_template_render"]


def family_chat_template_of(family: str) -> str:
    return (CHAT_TEMPLATES_DIR / tiny.FAMILIES[family].chat_template).read_text(encoding="utf-8")


def test_render_matches_transformers_with_template_kwargs(hf_tokenizer):
    # enable_thinking reaches the template the way transformers passes it.
    hf = hf_tokenizer("qwen3")
    messages = [{"role": "user", "content": "hi"}]
    ours = render_chat_template(family_chat_template("chatml"), messages, add_generation_prompt=True,
                                special_tokens={"eos_token": "<|im_end|>"}, template_kwargs={"enable_thinking": False})
    assert ours == hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    assert ours.endswith("<think>\n\n</think>\n\n")


def test_derivation_does_not_need_a_folder():
    # The family registry and derivation work on template text alone.
    result = derive_prompt_template(family_chat_template("phi4-mini"), {"eos_token": "<|endoftext|>"})
    assert result.exact and result.template == expected_template("phi4-mini")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("PIPELINE_FOUNDRY_PYTHON"), reason="needs PIPELINE_FOUNDRY_PYTHON (make test)")
@pytest.mark.parametrize("family", BUILT)
def test_built_family_passes_check_in_the_foundry_runtime(built_family, family):
    """Sliding-window (Gemma 2) and reasoning-token (DeepSeek-R1) builds load in ORT GenAI 0.14.1."""
    from pipeline.check import check_folder

    report = check_folder(built_family(family).folder, "foundry-local")
    assert report.ok, [f"{f.check}: {f.message}" for f in report.findings if f.level == "error"]
    assert "session" in report.checked


@pytest.mark.slow
def test_target_runtime_refuses_a_folder_that_runtime_would_reject(family_model, tmp_path):
    """target.runtime: foundry-local checks the staged folder; a failing one never replaces the output."""
    from pipeline.errors import PackageError
    from pipeline.recipe import recipe_from_dict
    from pipeline.runner import build

    def recipe(**builder_options):
        data = tiny_recipe("int4", family_model("gemma2")) | {"name": "gemma2-checked"}
        data["target"]["runtime"] = "foundry-local"
        data["passes"][0]["extra_options"] = builder_options
        return recipe_from_dict(data)

    out = tmp_path / "out"
    good = build(recipe(), output=out, log=lambda m: None)
    assert good.info["check"]["ok"] and "genai-config-keys" in good.info["check"]["checked"]
    before = (out / "build.lock.json").read_text()

    # The 0.18 builder's windowed KV cache for sliding-window layers: Foundry's runtime refuses it.
    with pytest.raises(PackageError) as err:
        build(recipe(windowed_kv_cache=True), output=out, log=lambda m: None)
    assert "would fail in foundry-local" in str(err.value) and "cache_slack" in str(err.value)
    assert (out / "build.lock.json").read_text() == before, "a refused build must leave the output alone"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
