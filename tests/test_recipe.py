"""Recipes: shipped files load, every malformed recipe is reported with its path and a fix,
extends/--set merge as documented. Fast: nothing is built or downloaded."""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline.errors import RecipeError
from pipeline.recipe import (
    BUILDER_OPTIONS,
    SCHEMA_PATH,
    Recipe,
    is_local_source,
    load_recipe,
    recipe_from_dict,
    schema,
    schema_text,
)

REPO = Path(__file__).resolve().parent.parent
RECIPES_DIR = REPO / "recipes"
# Recursive on purpose: a recipe in a sub-folder must be checked too.
SHIPPED = sorted(p for pattern in ("*.yaml", "*.yml", "*.json") for p in RECIPES_DIR.rglob(pattern))
TINY_MODEL = REPO / "models" / "tiny-qwen2-chat"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    """A folder that passes as a Hugging Face model folder for validation (only config.json)."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def good_recipe(source: str = "./ckpt") -> dict:
    return {
        "name": "test",
        "model": {"source": source},
        "target": {"device": "cpu", "execution_provider": "cpu"},
        "passes": [{"type": "model-builder", "precision": "int4"}],
    }


def write(path: Path, content: dict | list | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


def problems_of(path: Path, overrides: list[str] = ()) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, list(overrides))
    assert info.value.source == str(path)
    return info.value.problems


# --- shipped recipes -----------------------------------------------------------------------------

def test_recipes_are_found():
    assert len(SHIPPED) >= 7
    assert RECIPES_DIR / "tiny-qwen2-int4.yaml" in SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(RECIPES_DIR)))
def test_shipped_recipe_loads(path: Path, monkeypatch):
    # Validation is offline: hub ids are checked by shape, never looked up.
    monkeypatch.setattr(socket, "socket", lambda *a, **k: pytest.fail("validation used the network"))
    try:
        recipe = load_recipe(path)
    except RecipeError as e:
        if not TINY_MODEL.exists() and all(str(TINY_MODEL) in p for p in e.problems):
            pytest.skip(f"{TINY_MODEL.relative_to(REPO)} is not generated yet (the tiny model generator makes it)")
        raise
    assert recipe.warnings == (), "shipped hub recipes pin a commit"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(RECIPES_DIR)))
def test_shipped_recipe_is_valid_apart_from_its_source(path: Path, ckpt: Path):
    recipe = load_recipe(path, [f"model.source={ckpt}"])
    assert recipe.name == path.stem, "make build RECIPE=<file stem> writes artifacts/<name>"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(RECIPES_DIR)))
def test_shipped_recipe_opens_with_its_command(path: Path):
    head = path.read_text().splitlines()[0]
    assert head.startswith("#"), "each recipe opens with the command that runs it"
    text = path.read_text()
    rel = path.relative_to(REPO).as_posix()
    assert f"pipeline build {rel}" in text and f"pipeline build {rel} --set " in text


def test_shipped_hub_revisions_are_commits():
    for path in SHIPPED:
        revision = yaml.safe_load(path.read_text()).get("model", {}).get("revision")
        if revision is not None:
            assert re.fullmatch(r"[0-9a-f]{40}", revision), path


# --- malformed recipes: every mistake reported with its path and a fix ----------------------------

def _set(path: str, value):
    """An edit that sets `path` (a.b.0.c) in the recipe dict."""
    def edit(recipe: dict, tmp: Path):
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node = recipe
        for part in parents:
            node = node[part]
        node[last] = value
        return recipe
    return edit


def _drop(path: str):
    def edit(recipe: dict, tmp: Path):
        *parents, last = path.split(".")
        node = recipe
        for part in parents:
            node = node[part]
        del node[last]
        return recipe
    return edit


def _passes(*passes):
    return _set("passes", list(passes))


def _target(device, provider, *passes):
    def edit(recipe: dict, tmp: Path):
        recipe["target"] = {"device": device, "execution_provider": provider}
        if passes:
            recipe["passes"] = list(passes)
        return recipe
    return edit


def _text(text: str):
    return lambda recipe, tmp: text


def _extends_cycle(recipe: dict, tmp: Path):
    write(tmp / "a.yaml", {"extends": "recipe.yaml"})
    return {"extends": "a.yaml", **recipe}


def _no_config(recipe: dict, tmp: Path):
    (tmp / "empty").mkdir()
    recipe["model"]["source"] = "./empty"
    return recipe


MB = "model-builder"
MALFORMED = [
    # id, edit, overrides, path the message starts with, key phrase
    ("bad-precision", _set("passes.0.precision", "int5"), [],
     "passes[0].precision", "'int5' is not one of int4, int8, fp16, bf16, fp32"),
    ("legacy-algorithm", _set("passes.0.algorithm", "k_quant_last"), [], "passes[0].algorithm",
     "old name for algorithm k_quant with some MatMuls in int8; set algorithm: k_quant and extra_options: "
     "{matmul_mixed_precision: 'last_matmul:int8'}"),
    ("unknown-top-key", _set("nmae", "x"), [], "nmae", "unknown key; did you mean 'name'?"),
    ("unknown-nested-key", _set("model.revison", COMMIT), [],
     "model.revison", "unknown key; did you mean 'revision'?"),
    ("unknown-key-no-match", _set("target.zzz", 1), [],
     "target.zzz", "unknown key; allowed: device, execution_provider"),
    ("unknown-pass-key", _set("passes.0.blocksize", 32), [],
     "passes[0].blocksize", "unknown key; did you mean 'block_size'?"),
    ("missing-required", _drop("target.execution_provider"), [],
     "target", "missing required key 'execution_provider'"),
    ("missing-top-required", _drop("passes"), [], "(root)", "missing required key 'passes'"),
    ("wrong-type", _text("name: t\nmodel: {source: ./ckpt, trust_remote_code: yes}\n"
                         "target: {device: cpu, execution_provider: cpu}\n"
                         "passes: [{type: model-builder, precision: int4}]\n"), [],
     "model.trust_remote_code", "expected boolean, got 'yes'"),
    ("number-for-string", _set("model.revision", 1234), [],
     "model.revision", "expected string, got 1234 (quote it: '1234')"),
    ("no-passes", _passes(), [], "passes", "list at least one pass"),
    ("unknown-pass", _passes({"type": MB, "precision": "int4"}, {"type": "quantise"}), [],
     "passes[1].type", "unknown pass 'quantise' (known: model-builder, evaluate)"),
    ("unknown-pass-typo", _passes({"type": "model-bulder", "precision": "int4"}), [],
     "passes[0].type", "did you mean 'model-builder'?"),
    ("fp16-on-cpu", _set("passes.0.precision", "fp16"), [], "passes[0].precision",
     "fp16 is not supported on execution_provider 'cpu' (fp16 runs on cuda, dml); use int4, int8 or fp32 for cpu"),
    ("bf16-on-dml", _target("gpu", "dml", {"type": MB, "precision": "bf16"}), [], "passes[0].precision",
     "bf16 is not supported on execution_provider 'dml' (bf16 runs on cuda); use int4 or fp16 for dml"),
    ("quant-knob-on-fp32", _passes({"type": MB, "precision": "fp32", "block_size": 64}), [],
     "passes[0].block_size", "only applies to precision int4 or int8 (this pass is fp32); remove it"),
    ("device-provider", _target("cpu", "cuda"), [], "target",
     "device 'cpu' cannot use execution_provider 'cuda'; use device gpu or execution_provider cpu"),
    ("npu", _target("npu", "cpu"), [], "target.device",
     "'npu' has no supported execution provider yet (supported: cpu+cpu, gpu+cuda, gpu+dml, gpu+webgpu)"),
    ("missing-folder", _set("model.source", "./nope"), [], "model.source", "/nope does not exist"),
    ("folder-without-config", _no_config, [], "model.source",
     "has no config.json; point it at a Hugging Face model folder (config.json, weights, tokenizer)"),
    ("not-a-hub-id", _set("model.source", "x y"), [], "model.source",
     "'x y' is neither an existing folder nor a Hugging Face hub id (org/name)"),
    ("builder-twice", _passes({"type": MB, "precision": "int4"}, {"type": MB, "precision": "int8"}), [],
     "passes[1]", "model-builder appears more than once (first at passes[0]); keep one"),
    ("builder-not-first", _passes({"type": "quantise"}, {"type": MB, "precision": "int4"}), [],
     "passes[1]", "model-builder must be the first pass"),
    ("bad-extra-option", _set("passes.0.extra_options", {"prune_lmhead": True}), [],
     "passes[0].extra_options.prune_lmhead", "not a model-builder option; did you mean 'prune_lm_head'?"),
    ("hf-token", _set("passes.0.extra_options", {"hf_token": "hf_xxx"}), [],
     "passes[0].extra_options.hf_token", "the tool never sends a token; log in with `hf auth login`"),
    ("duplicate-field", _set("passes.0.extra_options", {"int4_block_size": 64}), [],
     "passes[0].extra_options.int4_block_size", "set passes[0].block_size instead"),
    ("hf-remote", _set("passes.0.extra_options", {"hf_remote": True}), [],
     "passes[0].extra_options.hf_remote", "set model.trust_remote_code instead"),
    ("extra-option-type", _set("passes.0.extra_options", {"nodes_to_exclude": ["a"]}), [],
     "passes[0].extra_options.nodes_to_exclude", "expected string, number or boolean, got a list"),
    ("extends-cycle", _extends_cycle, [], "extends", "cycle recipe.yaml -> a.yaml -> recipe.yaml"),
    ("extends-missing", lambda r, tmp: {"extends": "base.yaml", **r}, [], "extends",
     "base.yaml not found (the path is relative to the folder of the recipe that extends it)"),
    ("yaml-syntax", _text("name: t\nmodel:\n  source: ./ckpt\n   revision: x\n"), [],
     "line 4", "could not parse YAML"),
    ("duplicate-key", _text("name: t\nmodel: {source: ./ckpt}\nname: u\n"), [],
     "line 3", "could not parse YAML: key 'name' appears twice in one mapping; keep one"),
    ("set-extends", lambda r, tmp: r, ["extends=other.yaml"], "--set extends=other.yaml",
     "extends can only be given in a recipe file"),
    ("top-level-list", _text("- name: t\n"), [], "(root)", "a recipe must be a mapping"),
    ("empty-file", _text(""), [], "(root)", "got an empty file"),
    ("set-without-equals", lambda r, tmp: r, ["model.source"], "--set model.source",
     "no '=' (expected KEY=VALUE, e.g. model.source=./ckpt)"),
    ("set-empty-key", lambda r, tmp: r, ["=x"], "--set =x", "empty key"),
    ("set-past-end", lambda r, tmp: r, ["passes.3.precision=int8"], "--set passes.3.precision=int8",
     "index 3 is past the end of passes (1 item)"),
    ("template-no-content", _set("package", {"foundry_local": {"prompt_template": {
        "user": "<|user|>", "assistant": "{Content}", "prompt": "{Content}"}}}), [],
     "package.foundry_local.prompt_template.user", "must contain the {Content} placeholder"),
    ("template-not-auto", _set("package", {"foundry_local": {"prompt_template": "automatic"}}), [],
     "package.foundry_local.prompt_template", "must be 'auto' or a mapping with system, user, assistant, prompt"),
    ("foundry-suffix", _set("package", {"foundry_local": {"name": "my-model-cuda-gpu"}}), [],
     "package.foundry_local.name", "Foundry Local would require CUDA, but this build targets "
     "execution_provider 'cpu'; end the name with -generic-cpu"),
    ("bad-name", _set("name", "my model"), [], "name", "'my model' is not a valid name"),
]


@pytest.mark.parametrize("case_id, edit, overrides, where, phrase", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_recipe(tmp_path: Path, ckpt: Path, case_id, edit, overrides, where, phrase):
    recipe = write(tmp_path / "recipe.yaml", edit(good_recipe(), tmp_path))
    problems = problems_of(recipe, overrides)
    assert any(p.startswith(f"{where}:") and phrase in p for p in problems), problems
    assert all("\n" not in p for p in problems)


def test_json_syntax_error_has_line(tmp_path: Path):
    recipe = write(tmp_path / "recipe.json", '{"name": "t",\n "model": }')
    assert problems_of(recipe) == ["line 2: could not parse JSON: Expecting value"]


def test_json_recipe_loads(tmp_path: Path, ckpt: Path):
    recipe = write(tmp_path / "recipe.json", json.dumps(good_recipe()))
    assert load_recipe(recipe).model["source"] == str(ckpt)


def test_missing_file(tmp_path: Path):
    assert problems_of(tmp_path / "nope.yaml") == ["file not found"]


def test_error_in_extended_base_names_the_base(tmp_path: Path, ckpt: Path):
    write(tmp_path / "base.yaml", "name: [\n")
    recipe = write(tmp_path / "recipe.yaml", {"extends": "base.yaml"})
    [problem] = problems_of(recipe)
    assert problem.startswith("extends: ") and "base.yaml: line 2: could not parse YAML" in problem


def test_every_mistake_reported_at_once(tmp_path: Path, ckpt: Path):
    data = good_recipe()
    data["nmae"] = "typo"                                   # schema: unknown key
    data["target"]["execution_provider"] = "cuda"           # semantic: device/provider
    data["passes"][0]["extra_options"] = {"hf_token": "x"}  # semantic: extra option
    recipe = write(tmp_path / "recipe.yaml", data)
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe)
    problems = info.value.problems
    assert len(problems) == 3, problems
    assert problems[0].startswith("nmae: unknown key")
    assert problems[1].startswith("passes[0].extra_options.hf_token:")
    assert problems[2].startswith("target: device 'cpu' cannot use execution_provider 'cuda'")
    assert str(info.value).startswith(f"{recipe}: 3 problems:\n  - nmae:")


def test_identical_problems_reported_once(tmp_path: Path, ckpt: Path):
    # A pass that is not a mapping fails both the pass and the model-builder schema alike.
    recipe = write(tmp_path / "recipe.yaml", {**good_recipe(), "passes": [{"type": MB, "precision": "int4"}, "x"]})
    assert problems_of(recipe) == ["passes[1]: expected mapping, got 'x'"]


def test_recipe_from_dict_validates_the_same(tmp_path: Path, ckpt: Path):
    data = {**good_recipe(), "nmae": "x"}
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(data, base_dir=tmp_path, source="inline")
    assert info.value.problems == ["nmae: unknown key; did you mean 'name'?"]
    assert str(info.value).startswith("inline: ")
    with pytest.raises(RecipeError, match="a recipe must be a mapping"):
        recipe_from_dict(["not", "a", "mapping"])
    assert recipe_from_dict(good_recipe(), base_dir=tmp_path).model["source"] == str(ckpt)


# --- the CLI: exit 2, one message per problem, no traceback, nothing built ------------------------

CLI_CASES = ["bad-precision", "unknown-top-key", "fp16-on-cpu", "extends-cycle", "yaml-syntax", "top-level-list"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("case", [c for c in MALFORMED if c[0] in CLI_CASES], ids=lambda c: c[0])
def test_cli_validate_reports_problem(tmp_path: Path, ckpt: Path, case):
    _, edit, _, where, phrase = case
    write(tmp_path / "recipe.yaml", edit(good_recipe(), tmp_path))
    result = run_cli("validate", "recipe.yaml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: recipe.yaml: ")
    assert f"{where}:" in result.stderr and phrase in result.stderr


def test_cli_validate_ok_and_warnings(tmp_path: Path, ckpt: Path):
    write(tmp_path / "good.yaml", good_recipe())
    write(tmp_path / "hub.yaml", good_recipe("Qwen/Qwen2.5-0.5B-Instruct"))
    result = run_cli("validate", "good.yaml", "hub.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["ok: good.yaml", "ok: hub.yaml"]
    assert "warning: hub.yaml: model.revision is not pinned" in result.stderr


def test_cli_validate_set(tmp_path: Path, ckpt: Path):
    write(tmp_path / "good.yaml", good_recipe())
    result = run_cli("validate", "good.yaml", "--set", "passes[0].precision=fp16", cwd=tmp_path)
    assert result.returncode == 2
    assert "passes[0].precision: fp16 is not supported on execution_provider 'cpu'" in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("pipeline.runner") is None,
                    reason="pipeline/runner.py not written yet (cli build imports it before loading)")
def test_cli_build_stops_before_building(tmp_path: Path, ckpt: Path):
    bad = write(tmp_path / "bad.yaml", _set("passes.0.precision", "fp16")(good_recipe(), tmp_path))
    out = tmp_path / "out"
    result = run_cli("build", str(bad), "--output", str(out), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "passes[0].precision: fp16 is not supported" in result.stderr
    assert not out.exists()


# --- extends and --set ---------------------------------------------------------------------------

def test_extends_merges_maps_and_replaces_lists(tmp_path: Path, ckpt: Path):
    base = good_recipe()
    base["model"]["trust_remote_code"] = True
    base["passes"] = [{"type": MB, "precision": "int4", "block_size": 64, "extra_options": {"prune_lm_head": True}}]
    base["package"] = {"foundry_local": {"name": "base-generic-cpu"}}
    write(tmp_path / "base.yaml", base)
    child = write(tmp_path / "child.yaml", {
        "extends": "base.yaml",
        "name": "child",
        "model": {"trust_remote_code": False},
        "passes": [{"type": MB, "precision": "int8"}],
    })
    recipe = load_recipe(child)
    assert "extends" not in recipe.data
    assert recipe.name == "child"
    assert recipe.model == {"source": str(ckpt), "trust_remote_code": False, "revision": None}
    assert recipe.passes == [{"type": MB, "precision": "int8", "extra_options": {}}]
    assert recipe.package == {"foundry_local": {"name": "base-generic-cpu", "prompt_template": "auto"}}


def test_extends_chain(tmp_path: Path, ckpt: Path):
    write(tmp_path / "a.yaml", good_recipe())
    gpu = {"device": "gpu", "execution_provider": "cuda"}
    write(tmp_path / "b.yaml", {"extends": "a.yaml", "target": gpu})
    c = write(tmp_path / "c.yaml", {"extends": "b.yaml", "name": "c", "passes": [{"type": MB, "precision": "fp16"}]})
    recipe = load_recipe(c)
    assert (recipe.name, recipe.target, recipe.passes[0]["precision"]) == ("c", gpu, "fp16")


def test_set_typed_values(tmp_path: Path, ckpt: Path):
    recipe = write(tmp_path / "recipe.yaml", good_recipe())
    loaded = load_recipe(recipe, [
        "model.trust_remote_code=true",
        "passes[0].block_size=64",
        "passes.0.accuracy_level=4",
        "passes.0.extra_options.num_hidden_layers=2",
        "package.foundry_local.name=my-model-generic-cpu",  # creates the missing mappings
        "description=a fine-tune",
    ])
    step = loaded.passes[0]
    assert loaded.model["trust_remote_code"] is True
    assert (step["block_size"], step["accuracy_level"], step["extra_options"]) == (64, 4, {"num_hidden_layers": 2})
    assert loaded.package["foundry_local"]["name"] == "my-model-generic-cpu"
    assert loaded.data["description"] == "a fine-tune"
    # yes/no stay strings (only true/false are booleans), numbers are numbers, null is null
    assert problems_of(recipe, ["model.trust_remote_code=yes"]) == [
        "model.trust_remote_code: expected boolean, got 'yes'"]
    assert problems_of(recipe, ["name=32"]) == ["name: expected string, got 32 (quote it: '32')"]
    assert problems_of(recipe, ["passes.0.accuracy_level=null"]) == [
        "passes[0].accuracy_level: null is not one of 1, 2, 3, 4"]


def test_set_list_index_both_spellings(tmp_path: Path, ckpt: Path):
    recipe = write(tmp_path / "recipe.yaml", good_recipe())
    for key in ("passes.0.precision", "passes[0].precision"):
        loaded = load_recipe(recipe, [f"{key}=int8"])
        assert loaded.passes == [{"type": MB, "precision": "int8", "extra_options": {}}]
    loaded = load_recipe(recipe, ["passes[0]={type: model-builder, precision: fp32}"])
    assert loaded.passes[0]["precision"] == "fp32"


def test_set_reports_every_bad_override(tmp_path: Path, ckpt: Path):
    recipe = write(tmp_path / "recipe.yaml", good_recipe())
    problems = problems_of(recipe, ["nokey", "name.x=1", "passes[1].precision=int8", "model[0]=x", "a..b=1"])
    assert len(problems) == 5, problems
    assert all(p.startswith("--set ") for p in problems)
    assert any(p.startswith("--set name.x=1: name is 'test', not a mapping or list") for p in problems)
    assert any(p.startswith("--set model[0]=x: model is a mapping, not a list") for p in problems)


def test_paths_relative_to_the_recipe_file(tmp_path: Path, ckpt: Path, monkeypatch):
    monkeypatch.chdir(ckpt)  # the cwd must not matter for paths written in a file
    nested = write(tmp_path / "recipes" / "sub" / "r.yaml", good_recipe("../../ckpt"))
    assert load_recipe(nested).model["source"] == str(ckpt)


def test_paths_in_a_base_are_relative_to_the_base(tmp_path: Path, ckpt: Path):
    write(tmp_path / "recipes" / "base.yaml", good_recipe("../ckpt"))
    child = write(tmp_path / "recipes" / "sub" / "child.yaml", {"extends": "../base.yaml", "name": "child"})
    assert load_recipe(child).model["source"] == str(ckpt)
    # a child that sets model.source itself: relative to the child
    (tmp_path / "recipes" / "sub" / "mine").mkdir()
    (tmp_path / "recipes" / "sub" / "mine" / "config.json").write_text("{}")
    own = write(tmp_path / "recipes" / "sub" / "own.yaml",
                {"extends": "../base.yaml", "name": "own", "model": {"source": "./mine"}})
    assert load_recipe(own).model["source"] == str(tmp_path / "recipes" / "sub" / "mine")


def test_set_source_is_relative_to_cwd(tmp_path: Path, ckpt: Path, monkeypatch):
    recipe = write(tmp_path / "recipes" / "r.yaml", good_recipe("../ckpt"))
    monkeypatch.chdir(tmp_path)
    assert load_recipe(recipe, ["model.source=./ckpt"]).model["source"] == str(ckpt)
    monkeypatch.chdir(tmp_path / "recipes")
    [problem] = problems_of(recipe, ["model.source=./ckpt"])
    assert problem == f"model.source: folder {tmp_path / 'recipes' / 'ckpt'} does not exist"


def test_hub_source_stays_an_id_with_warnings(tmp_path: Path):
    recipe = write(tmp_path / "r.yaml", good_recipe("Qwen/Qwen2.5-0.5B-Instruct"))
    loaded = load_recipe(recipe)
    assert loaded.model["source"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert loaded.warnings == ("model.revision is not pinned; builds may change when the hub repo does "
                               "(pin a 40-character commit)",)
    assert load_recipe(recipe, [f"model.revision={COMMIT}"]).warnings == ()
    assert "is a branch or tag" in load_recipe(recipe, ["model.revision=main"]).warnings[0]


def test_revision_on_local_source_warns(tmp_path: Path, ckpt: Path):
    recipe = write(tmp_path / "r.yaml", good_recipe())
    assert load_recipe(recipe, [f"model.revision={COMMIT}"]).warnings == (
        "model.revision is ignored for a local folder; remove it",)


def test_block_wider_than_hidden_size_warns():
    recipe = RECIPES_DIR / "tiny-qwen2-int4.yaml"  # its model's hidden_size is 128
    assert load_recipe(recipe, ["passes.0.block_size=128"]).warnings == ()
    assert load_recipe(recipe, ["passes.0.block_size=256"]).warnings == (
        "passes[0].block_size 256 is larger than the model's hidden_size 128: each weight column is padded to "
        "one block (a bigger file, no gain); use 128",)


# --- defaults, digest, helpers -------------------------------------------------------------------

def test_defaults_filled(tmp_path: Path, ckpt: Path):
    data = good_recipe()
    data["$schema"] = "../schemas/recipe.schema.json"
    loaded = load_recipe(write(tmp_path / "r.yaml", data))
    assert loaded.data == {
        "name": "test",
        "model": {"source": str(ckpt), "revision": None, "trust_remote_code": False},
        "target": {"device": "cpu", "execution_provider": "cpu"},
        "passes": [{"type": MB, "precision": "int4", "block_size": 32, "symmetric": True,
                    "algorithm": "default", "accuracy_level": None, "extra_options": {}}],
        "package": {"foundry_local": {"name": None, "prompt_template": "auto"}},
    }
    assert loaded.path == tmp_path / "r.yaml"
    json.dumps(loaded.data)  # plain JSON


def test_digest_is_stable_under_key_order(tmp_path: Path, ckpt: Path):
    a = recipe_from_dict(good_recipe(), base_dir=tmp_path)
    reordered = {k: good_recipe()[k] for k in reversed(list(good_recipe()))}
    reordered["target"] = {"execution_provider": "cpu", "device": "cpu"}
    b = recipe_from_dict(reordered, base_dir=tmp_path)
    assert a.digest() == b.digest()
    assert re.fullmatch(r"[0-9a-f]{64}", a.digest())
    c = recipe_from_dict({**good_recipe(), "passes": [{"type": MB, "precision": "int8"}]}, base_dir=tmp_path)
    assert c.digest() != a.digest()
    assert Recipe(data={"b": 1, "a": 2}).digest() == Recipe(data={"a": 2, "b": 1}).digest()


@pytest.mark.parametrize("source, local", [
    ("./ckpt", True), ("../x", True), ("/abs/x", True), ("~/x", True), (".", True), (".\\x", True),
    ("ckpt", True),                 # an existing folder, though it looks like a hub id
    ("Qwen/Qwen2.5-0.5B-Instruct", False), ("gpt2", False),
])
def test_is_local_source(tmp_path: Path, ckpt: Path, source, local):
    assert is_local_source(source, tmp_path) is local


def test_schema_is_valid_and_served():
    jsonschema.Draft202012Validator.check_schema(schema())
    assert schema_text() == SCHEMA_PATH.read_text()


def test_builder_options_match_installed_builder():
    spec = importlib.util.find_spec("onnxruntime_genai")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("onnxruntime-genai is not installed")
    builder = Path(list(spec.submodule_search_locations)[0]) / "models" / "builder.py"
    text = builder.read_text()
    help_text = text[text.index('"--extra_options"'):]
    help_text = help_text[:help_text.index("parser.add_argument", 1)]
    documented = set(re.findall(r"^ {16}([a-z0-9_]+) = ", help_text, flags=re.M))
    assert documented == BUILDER_OPTIONS


# --- the fast schema check (pipeline.schema_check) ------------------------------------------------

_ODD_VALUES = (None, True, False, 0, 1, -1, 1.0, 1.5, 33, 1e9, "", "x", "int4", "cpu", "Qwen/Qwen2.5", " ",
               [], ["x"], [{}], {}, {"type": "model-builder"}, {"x": 1})


def _mutations(doc):
    """Each document that differs from `doc` in one place: a value replaced by an odd one, a key
    removed, an unknown key added, a list item dropped or duplicated."""
    def at(node, path):
        if isinstance(node, dict):
            for key in list(node):
                yield from at(node[key], (*path, key))
        elif isinstance(node, list):
            for i, item in enumerate(node):
                yield from at(item, (*path, i))
        yield path, node

    def replaced(path, fn):
        new = json.loads(json.dumps(doc))
        parent = new
        for part in path[:-1]:
            parent = parent[part]
        fn(parent, path[-1])
        return new

    for path, node in at(doc, ()):
        if not path:
            continue
        for value in _ODD_VALUES:
            yield replaced(path, lambda p, k, v=value: p.__setitem__(k, v))
        if isinstance(path[-1], str):
            yield replaced(path, lambda p, k: p.pop(k))
        else:
            yield replaced(path, lambda p, k: p.pop(k))
            yield replaced(path, lambda p, k: p.insert(k, p[k]))
        if isinstance(node, dict):
            yield replaced(path, lambda p, k: p[k].__setitem__("unknown_key", 1))


def _shipped_docs() -> list[dict]:
    docs = [yaml.safe_load(p.read_text()) for p in SHIPPED]
    return [d for d in docs if "extends" not in d]


def test_fast_schema_check_knows_every_keyword_the_schema_uses():
    from pipeline.schema_check import KEYWORDS

    used = set()

    def walk(node, in_properties=False):
        if isinstance(node, dict):
            for key, value in node.items():
                if not in_properties:
                    used.add(key)
                walk(value, in_properties=key in ("properties", "$defs") and not in_properties)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema())
    assert used - KEYWORDS == set(), "teach pipeline/schema_check.py these keywords (or jsonschema runs on every build)"


def test_fast_schema_check_agrees_with_jsonschema():
    from pipeline.schema_check import conforms

    validator = jsonschema.Draft202012Validator(schema())
    seen, invalid = 0, 0
    for doc in _shipped_docs():
        assert conforms(doc, schema()), "a shipped recipe must pass the fast check"
        for mutated in _mutations(doc):
            expected = validator.is_valid(mutated)
            assert conforms(mutated, schema()) is expected, json.dumps(mutated)
            seen += 1
            invalid += not expected
    assert seen > 1000 and 0 < invalid < seen


def test_valid_recipe_does_not_import_jsonschema(tmp_path: Path):
    code = ("import sys; from pipeline.recipe import load_recipe; load_recipe(sys.argv[1]); "
            "print('jsonschema' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(RECIPES_DIR / "tiny-qwen2-int4.yaml")],
                          capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout.strip() == "False"
