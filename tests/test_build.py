"""End-to-end builds of the tiny model: complete folders that load and generate, parity with
transformers, PromptTemplate fidelity, and what a failed build leaves behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import PRECISIONS, REPO, og_greedy, run_cli, tiny_recipe

pytestmark = pytest.mark.slow

EXPECTED_FILES = {"model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json", "tokenizer_config.json",
                  "chat_template.jinja", "inference_model.json", "build.json"}
CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Tell me a fable about a fox."}]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_folder_is_complete_and_generates(built, precision):
    folder = built[precision]
    names = {p.name for p in folder.iterdir()}
    assert EXPECTED_FILES <= names, f"missing: {EXPECTED_FILES - names}"
    assert not [n for n in names if n.startswith(".")], names

    info = json.loads((folder / "inference_model.json").read_text())
    assert info["Name"] == f"tiny-qwen2-chat-{precision}-generic-cpu"
    assert set(info["PromptTemplate"]) == {"system", "user", "assistant", "prompt"}
    assert all("{Content}" in v for v in info["PromptTemplate"].values())

    build_info = json.loads((folder / "build.json").read_text())
    from pipeline.cache import hash_folder

    recorded = build_info["files"]
    actual = hash_folder(folder)
    del actual["build.json"], actual["build.lock.json"]
    assert recorded == actual
    assert build_info["passes"][0]["params"]["precision"] == precision
    assert build_info["tools"]["onnxruntime-genai"].startswith("0.18")
    assert build_info["source"]["kind"] == "local"

    tokens = og_greedy(folder, [1, 2, 3, 4], 8)
    assert len(tokens) == 8


def test_fp32_greedy_matches_transformers(built, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, torch_dtype=torch.float32).eval()
    for messages in (CHAT, [{"role": "user", "content": "What is liberty?"}]):
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        with torch.no_grad():
            ref = model.generate(torch.tensor([ids]), max_new_tokens=16, min_new_tokens=16, do_sample=False,
                                 pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
        assert len(set(ref)) > 4, f"degenerate reference {ref}: the parity check would prove nothing"
        assert og_greedy(built["fp32"], ids, 16) == ref


def test_prompt_template_renders_the_chat_template(built):
    from transformers import AutoTokenizer

    from pipeline.chat import build_prompt

    folder = built["int4"]
    info = json.loads((folder / "inference_model.json").read_text())
    tok = AutoTokenizer.from_pretrained(folder)  # the folder's own tokenizer + chat_template.jinja
    expected = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    assert build_prompt(info, CHAT[1]["content"], system=CHAT[0]["content"]) == expected
    source_template = (REPO / "models/tiny-qwen2-chat/chat_template.jinja").read_text()
    assert (folder / "chat_template.jinja").read_text() == source_template
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["chat_template"] == source_template
    assert "local_files_only" not in tokenizer_config


def test_cli_build_then_chat(tmp_path, tiny_model):
    out = tmp_path / "out"
    r = run_cli("build", "recipes/tiny-qwen2-int4.yaml", "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert "[2/3] model-builder" in r.stderr and "built" in r.stdout
    r = run_cli("chat", str(out), "Hello there", "--greedy", "--max-tokens", "8")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip(), "chat printed nothing"


def test_quantization_settings_reach_int8_and_int4_graphs(tmp_path):
    """block_size, accuracy_level and symmetric shape the MatMulNBits nodes the builder writes,
    at int8 as at int4 (asymmetric adds zero points: a fourth input)."""
    import onnx

    from pipeline.cache import Cache
    from pipeline.recipe import recipe_from_dict
    from pipeline.runner import build

    for precision, bits in (("int8", 8), ("int4", 4)):
        step = {"type": "model-builder", "precision": precision, "block_size": 128, "accuracy_level": 1,
                "symmetric": False}
        result = build(recipe_from_dict(tiny_recipe(precision, passes=[step])), tmp_path / precision,
                       cache=Cache(tmp_path / "cache"), log=lambda _: None)
        graph = onnx.load(str(result.folder / "model.onnx"), load_external_data=False).graph
        nodes = [n for n in graph.node if n.op_type == "MatMulNBits"]
        assert nodes, f"{precision}: no MatMulNBits"
        for node in nodes:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert (attrs["bits"], attrs["block_size"], attrs["accuracy_level"]) == (bits, 128, 1), node.name
            assert len(node.input) == 4, f"{node.name}: asymmetric needs zero points"


def test_failed_build_keeps_previous_output_and_leaves_no_staging(tmp_path, built, model_copy):
    from pipeline.errors import PassError
    from pipeline.recipe import recipe_from_dict
    from pipeline.runner import build

    out = tmp_path / "out"
    first = build(recipe_from_dict(tiny_recipe("int4", model_copy)), output=out, log=lambda m: None)
    before = json.loads((out / "build.json").read_text())["files"]

    # A model the builder cannot convert: the pass fails after the source resolved fine.
    config = json.loads((model_copy / "config.json").read_text())
    config["architectures"] = ["NoSuchArchForCausalLM"]
    (model_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(PassError) as err:
        build(recipe_from_dict(tiny_recipe("int4", model_copy)), output=out, log=lambda m: None)
    assert "model-builder" in str(err.value) and "full log" in str(err.value)
    assert json.loads((out / "build.json").read_text())["files"] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tiny-model"], "staging folder left behind"
    assert first.folder == out


def test_refuses_to_overwrite_a_folder_it_did_not_make(tmp_path, tiny_model):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = run_cli("build", "recipes/tiny-qwen2-int4.yaml", "--output", str(out))
    assert r.returncode == 2
    assert "was not made by pipeline" in r.stderr and "Traceback" not in r.stderr
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def _hf_cache(root: Path, repo_id: str, model: Path, commit: str) -> Path:
    """A Hugging Face hub cache holding one snapshot of `model`, laid out as huggingface_hub does."""
    import shutil

    repo = root / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return root


def test_hub_id_builds_offline_from_the_hf_cache(tmp_path, tiny_model):
    commit = "0123456789abcdef0123456789abcdef01234567"
    cache = _hf_cache(tmp_path / "hub", "tiny-org/tiny-qwen2-chat", tiny_model, commit)
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    recipe = tmp_path / "hub.json"
    recipe.write_text(json.dumps(tiny_recipe("int4", "tiny-org/tiny-qwen2-chat") | {"name": "hub"}))
    r = run_cli("build", str(recipe), "--set", "model.revision=main", "--output", str(tmp_path / "out"), env=env)
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path / "out" / "build.json").read_text())
    assert info["source"]["kind"] == "hub" and info["source"]["commit"] == commit
    assert (info["source"]["source"], info["source"]["revision"]) == ("tiny-org/tiny-qwen2-chat", "main")
    assert info["source"]["path"].endswith(f"snapshots/{commit}")
    assert json.loads((tmp_path / "out" / "inference_model.json").read_text())["Name"] == \
        "tiny-qwen2-chat-int4-generic-cpu"

    # A revision that is not in the cache, offline: one clear line, exit 2, nothing written.
    r = run_cli("build", str(recipe), "--set", "model.revision=v9", "--output", str(tmp_path / "out2"), env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "not in the Hugging Face cache" in r.stderr, r.stderr
    assert not (tmp_path / "out2").exists()


FOUNDRY_PYTHON = os.environ.get("PIPELINE_FOUNDRY_PYTHON")


@pytest.mark.skipif(not FOUNDRY_PYTHON, reason="set PIPELINE_FOUNDRY_PYTHON (make test does, via make foundry-venv)")
@pytest.mark.parametrize("precision", PRECISIONS)
def test_loads_and_generates_in_foundry_local_runtime(built, precision):
    """Foundry Local bundles ORT 1.26.0 + ORT GenAI 0.14.1: our 0.18-built folders must run there."""
    import subprocess

    folder = built[precision]
    r = subprocess.run([FOUNDRY_PYTHON, str(REPO / "pipeline" / "foundry_smoke.py"), str(folder), "Hello", "12"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert (result["onnxruntime"], result["onnxruntime_genai"]) == ("1.26.0", "0.14.1")
    assert len(result["tokens"]) == 12
    # Same prompt, same greedy tokens as our own runtime: the folder means the same thing there.
    assert og_greedy(folder, result["prompt_ids"], 12) == result["tokens"]
    # The runtime's chat-template rendering and our PromptTemplate agree.
    assert result["chat_template_render"] == result["prompt_template_render"]
