"""Recipes: read a YAML/JSON file, resolve `extends`, apply `--set` overrides, validate, fill defaults.

`load_recipe` reads top to bottom in that order. Validation never stops at the first mistake: the
JSON Schema and the builder's rules each report every problem they find, and one RecipeError
carries them all, each as `path: what is wrong; how to fix it`.

Only light modules are imported here (yaml): the CLI loads this for every build. jsonschema is
imported only to explain a recipe that pipeline.schema_check has found invalid.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline import schema_check
from pipeline.errors import RecipeError

if TYPE_CHECKING:
    import jsonschema

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "recipe.schema.json"

# What onnxruntime-genai's model builder (0.18) accepts; it refuses every other pair.
PROVIDERS_BY_DEVICE = {"cpu": ("cpu",), "gpu": ("cuda", "dml", "webgpu"), "npu": ()}
PROVIDERS_BY_PRECISION = {
    "int4": ("cpu", "cuda", "dml", "webgpu"),
    "int8": ("cpu", "cuda", "webgpu"),
    "fp16": ("cuda", "dml"),
    "bf16": ("cuda",),
    "fp32": ("cpu", "cuda"),
}
# Weight-only quantization settings: the builder applies them to int4 and int8 MatMulNBits alike.
QUANT_KNOBS = ("block_size", "accuracy_level", "symmetric", "algorithm")
QUANTIZED = ("int4", "int8")
# The builder's legacy algo_config names: base algorithm + its matmul_mixed_precision (0.18 builder.py).
LEGACY_ALGORITHMS = {
    "rtn_last": ("rtn", "last_matmul:int8"),
    "k_quant_last": ("k_quant", "last_matmul:int8"),
    "k_quant_mixed": ("k_quant", "last_matmul:int8,mixed_layers:int8"),
    "k_quant_linear": ("k_quant", "last_matmul:int8,linear_attn:int8"),
}
INT4_DEFAULTS = {"block_size": 32, "symmetric": True, "algorithm": "default", "accuracy_level": None}

# extra_options the recipe already has a field for, or that the tool decides: where to set them.
EXTRA_OPTION_FIELDS = {
    "block_size": "set passes[{i}].block_size instead",
    "int4_block_size": "set passes[{i}].block_size instead",
    "accuracy_level": "set passes[{i}].accuracy_level instead",
    "int4_accuracy_level": "set passes[{i}].accuracy_level instead",
    "is_symmetric": "set passes[{i}].symmetric instead",
    "int4_is_symmetric": "set passes[{i}].symmetric instead",
    "algo_config": "set passes[{i}].algorithm instead",
    "int4_algo_config": "set passes[{i}].algorithm instead",
    "hf_token": "the tool never sends a token; log in with `hf auth login` or set HF_TOKEN for gated models",
    "hf_remote": "set model.trust_remote_code instead",
}

# Every KEY of the builder's --extra_options, from the help text of
# onnxruntime_genai/models/builder.py 0.18.0 (tests/test_recipe.py checks the installed copy).
BUILDER_OPTIONS = frozenset("""
    accuracy_level block_size qmoe_block_size qmoe_weights_prepacked matmulnbits_weights_prepacked
    is_symmetric op_types_to_quantize nodes_to_exclude algo_config matmul_mixed_precision
    num_hidden_layers filename config_only hf_token hf_remote exclude_embeds exclude_lm_head
    exclude_mtp prune_lm_head include_hidden_states aux_hidden_state_layers dflash2_path
    dflash2_num_draft_tokens max_draft_tokens dflash2_fuse_gate_up dflash2_fuse_qkv fuse_mlp_gate_up
    dflash2_precision dspark_path dspark_num_draft_tokens dspark_top_k mtp_quant_config linear_attn_op
    state_update_capacity state_window enable_cuda_fpa_intb_gemm use_paged_attention paged_block_size
    paged_chunk_size windowed_kv_cache gpu_utilization_factor max_batch_size max_scheduled_tokens
    num_blocks shared_embeddings enable_cuda_graph enable_dml_graph enable_webgpu_graph
    use_device_allocator_for_initializers use_qdq moe_quant_type use_8bits_moe kv_cache_quant_scheme
    kv_cache_rotation kv_cache_scale_file fuse_qkv disable_qkv_fusion fuse_qk_norm_gqa
    use_webgpu_fp32 use_cuda_bf16 adapter_path
""".split())

# Foundry Local reads the execution provider from the end of a model Name.
FOUNDRY_SUFFIX_NEEDS = {
    "generic-cpu": "any CPU",
    "generic-gpu": "a DirectML or WebGPU GPU",
    "cuda-gpu": "CUDA",
    "trtrtx-gpu": "TensorRT-RTX",
    "openvino-gpu": "OpenVINO on a GPU",
    "openvino-npu": "OpenVINO on an NPU",
    "qnn-npu": "a Qualcomm NPU (QNN)",
    "vitis-npu": "an AMD NPU (Vitis AI)",
}
FOUNDRY_SUFFIX = {"cpu": "generic-cpu", "cuda": "cuda-gpu", "dml": "generic-gpu", "webgpu": "generic-gpu"}

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
SET_KEY = re.compile(r"^[^.\[\]=]+(?:\.[^.\[\]=]+|\[\d+\])*$")
SET_HINT = "(expected KEY=VALUE, e.g. model.source=./ckpt)"


class _Loader(yaml.SafeLoader):
    """safe_load, but only true/false are booleans (not yes/no/on/off), dates stay strings (so
    every value is plain JSON and `trust_remote_code: yes` is reported, not guessed), and a key
    given twice in one mapping is an error instead of the last one silently winning."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key '{key_node.value}' appears twice in one mapping; keep one",
                        key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_BOOL_TAG = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL_TAG, "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


@functools.lru_cache(maxsize=1)
def schema_text() -> str:
    """The recipe JSON Schema file's text, for `pipeline schema`."""
    return SCHEMA_PATH.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def schema() -> dict:
    """The parsed recipe JSON Schema (shared: do not modify)."""
    return json.loads(schema_text())


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    import jsonschema

    return jsonschema.Draft202012Validator(schema())


def _conforms(data: dict) -> bool:
    """The cheap yes/no (no jsonschema import); False also when it cannot tell."""
    try:
        return schema_check.conforms(data, schema())
    except schema_check.Unsupported:
        return False


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. `data` is plain JSON with defaults filled in; treat it as read-only."""

    data: dict
    path: Path | None = None
    warnings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def model(self) -> dict:
        return self.data["model"]

    @property
    def target(self) -> dict:
        return self.data["target"]

    @property
    def passes(self) -> list[dict]:
        return self.data["passes"]

    @property
    def package(self) -> dict:
        return self.data["package"]

    def digest(self) -> str:
        """sha256 hex of the canonical JSON of `data`: equal recipes give equal digests."""
        canonical = json.dumps(self.data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class _Fatal(Exception):
    """A problem after which nothing else can be checked (unreadable file, broken extends)."""


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Load, merge, override and validate the recipe at `path`.

    Raises RecipeError listing every problem found. Paths in a recipe file are relative to that
    file (in an extended base: to the base file); `--set model.source=...` is relative to the cwd.
    """
    label = str(path)
    file = Path(path).expanduser().resolve()
    try:
        data, source_dir = _read_with_extends(file, chain=())
    except _Fatal as e:
        raise RecipeError([str(e)], source=label) from None

    problems: list[tuple[tuple, str]] = []
    for item in overrides:
        if _apply_override(data, item, problems):
            source_dir = Path.cwd()  # the override set model.source
    return _validate(data, source_dir, label, file, problems)


def recipe_from_dict(data: dict, *, base_dir: Path | None = None, source: str | None = None) -> Recipe:
    """Validate in-memory recipe data exactly as load_recipe does a file.

    `base_dir` (default: the cwd) is where a relative `extends` or local model.source starts.
    """
    base = Path(base_dir).expanduser().resolve() if base_dir is not None else Path.cwd()
    if not isinstance(data, dict):
        raise RecipeError([f"(root): {_not_a_mapping(data)}"], source=source)
    try:
        merged, source_dir = _merge_extends(copy.deepcopy(data), base, chain=())
    except _Fatal as e:
        raise RecipeError([str(e)], source=source) from None
    return _validate(merged, source_dir, source, None, [])


def is_local_source(source: str, base_dir: Path | None = None) -> bool:
    """True if model.source names a folder rather than a hub id.

    Explicit paths (./x, ../x, /x, ~/x, .\\x, C:\\x, '.') are local whether or not they exist, so
    a typo is reported as a missing folder; anything else is local only if that folder exists
    (relative to `base_dir`, default the cwd).
    """
    if source in (".", "..") or source.startswith(("./", "../", "/", "~", ".\\", "..\\", "\\")):
        return True
    if re.match(r"^[A-Za-z]:[\\/]", source):
        return True
    return _local_path(source, base_dir or Path.cwd()).is_dir()


# --- reading and merging -------------------------------------------------------------------------

def _read_with_extends(file: Path, chain: tuple[Path, ...], where: str = "") -> tuple[dict, Path]:
    """Read `file` and the recipes it extends; return merged data and model.source's base dir."""
    return _merge_extends(_read_mapping(file, where), file.parent, chain + (file,))


def _merge_extends(data: dict, folder: Path, chain: tuple[Path, ...]) -> tuple[dict, Path]:
    """Deep-merge `data` over the recipe its `extends` names (relative to `folder`)."""
    parent = data.pop("extends", None)
    sets_source = isinstance(data.get("model"), dict) and "source" in data["model"]
    if parent is None:
        return data, folder
    if not isinstance(parent, str) or not parent:
        raise _Fatal(f"extends: expected a recipe path (string), got {_show(parent)}")
    base_file = (folder / Path(parent).expanduser()).resolve()
    root = chain[0].parent if chain else folder  # show paths as the top recipe's extends would
    if base_file in chain:
        cycle = " -> ".join(_display(p, root) for p in chain[chain.index(base_file):] + (base_file,))
        raise _Fatal(f"extends: cycle {cycle}; remove one of these extends")
    if not base_file.is_file():
        raise _Fatal(f"extends: {_display(base_file, root)} not found (the path is relative to the folder "
                     f"of the recipe that extends it)")
    where = f"extends: {_display(base_file, root)}: "
    base, base_source_dir = _read_with_extends(base_file, chain, where)
    return _deep_merge(base, data), (folder if sets_source else base_source_dir)


def _read_mapping(file: Path, where: str = "") -> dict:
    """Parse a YAML or JSON (by extension) recipe file whose top level must be a mapping."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _Fatal(f"{where}file not found") from None
    except IsADirectoryError:
        raise _Fatal(f"{where}is a folder; give a recipe file (.yaml, .yml or .json)") from None
    except UnicodeDecodeError:
        raise _Fatal(f"{where}is not UTF-8 text") from None
    except OSError as e:
        raise _Fatal(f"{where}could not read: {e.strerror or e}") from None
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise _Fatal(f"{where}line {e.lineno}: could not parse JSON: {e.msg}") from None
    else:
        try:
            data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
        except yaml.MarkedYAMLError as e:
            line = f"line {e.problem_mark.line + 1}: " if e.problem_mark else ""
            raise _Fatal(f"{where}{line}could not parse YAML: {e.problem or e.context}") from None
        except yaml.YAMLError as e:
            raise _Fatal(f"{where}could not parse YAML: {e}") from None
    if not isinstance(data, dict):
        raise _Fatal(f"{where}(root): {_not_a_mapping(data)}")
    return data


def _deep_merge(base: dict, over: dict) -> dict:
    """Mappings merge key by key; lists and scalars in `over` replace those in `base`."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _apply_override(data: dict, item: str, problems: list) -> bool:
    """Apply one `--set KEY=VALUE`; report a bad one in `problems`. True if it set model.source."""
    def bad(why: str) -> bool:
        problems.append(((), f"--set {item}: {why}"))
        return False

    key, eq, raw = item.partition("=")
    key = key.strip()
    if not eq:
        return bad(f"no '=' {SET_HINT}")
    if not key:
        return bad(f"empty key {SET_HINT}")
    if not SET_KEY.match(key):
        return bad(f"'{key}' is not a key path like passes.0.precision or passes[0].precision {SET_HINT}")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else None  # noqa: S506
    except yaml.YAMLError:
        value = raw
    tokens = [int(t[1:-1]) if t.startswith("[") else t for t in re.findall(r"[^.\[\]]+|\[\d+\]", key)]
    if tokens[0] == "extends":
        return bad("extends can only be given in a recipe file")

    node: Any = data
    slot: Any
    for depth, token in enumerate(tokens):
        where = _format_path(tokens[:depth])
        if isinstance(node, list):
            if not (isinstance(token, int) or token.isdigit()):
                return bad(f"{where} is a list; index it with a number, e.g. {where}[0]")
            slot = tokens[depth] = int(token)
            if slot >= len(node):
                count = f"{len(node)} item{'' if len(node) == 1 else 's'}"
                return bad(f"index {slot} is past the end of {where} ({count}) {SET_HINT}")
        elif isinstance(node, dict):
            if isinstance(token, int):
                return bad(f"{where} is a mapping, not a list; use {where}.KEY")
            slot = token
        else:
            return bad(f"{where} is {_show(node)}, not a mapping or list {SET_HINT}")
        if depth == len(tokens) - 1:
            node[slot] = value
            break
        if isinstance(node, dict) and slot not in node:
            following = tokens[depth + 1]
            if isinstance(following, int) or following.isdigit():
                return bad(f"{_format_path(tokens[:depth + 1])} is not set, so it has no "
                           f"element {following}")
            node[slot] = {}  # setting into a missing mapping creates it
        node = node[slot]
    names = [str(t) for t in tokens]
    return names[:2] == ["model", "source"] or names == ["model"]


# --- validation ----------------------------------------------------------------------------------

def _validate(data: dict, source_dir: Path, label: str | None, file: Path | None,
              problems: list[tuple[tuple, str]]) -> Recipe:
    """Schema + semantic checks (all problems, sorted, deduplicated); then defaults."""
    if not _conforms(data):
        for error in _validator().iter_errors(data):
            problems.extend(_schema_problems(error))
    warnings: list[str] = []
    _check_target(data, problems)
    _check_passes(data, problems)
    _check_source(data, source_dir, problems, warnings)
    _check_eval_text(data, source_dir, problems)
    _check_foundry_name(data, problems)
    _check_foundry_template(data, problems)
    if problems:
        ordered = sorted(set(problems), key=lambda p: (_path_sort_key(p[0]), p[1]))
        raise RecipeError([text for _, text in ordered], source=label)
    return Recipe(data=_with_defaults(data, source_dir), path=file, warnings=tuple(warnings))


def _schema_problems(error: jsonschema.ValidationError) -> list[tuple[tuple, str]]:
    """Turn one jsonschema error into leaf problems, each `path: what; fix`."""
    path = tuple(error.absolute_path)
    at = _format_path(path)
    kind, value, instance = error.validator, error.validator_value, error.instance

    if kind in ("oneOf", "anyOf"):
        # A branch that fails only because the value is of another form is noise; keep the
        # leaf errors of the branch(es) the value was meant for.
        leaves = [e for e in error.context
                  if not (e.validator in ("const", "type", "enum") and not e.relative_path)]
        if leaves:
            return [p for e in leaves for p in _schema_problems(e)]
        return [(path, f"{at}: {_form_hint(path)}")]
    if kind == "additionalProperties" and value is False:
        allowed = sorted(error.schema.get("properties", {}))
        return [(path + (key,), f"{_format_path(path + (key,))}: unknown key; {_suggest(str(key), allowed)}")
                for key in instance if key not in allowed]
    if kind == "required":
        return [(path, f"{at}: missing required key '{key}'") for key in value if key not in instance]
    if kind == "enum":
        if len(path) == 3 and path[0] == "passes" and path[2] == "type":
            known = ", ".join(map(str, value))
            hint = _did_you_mean(instance, value)
            return [(path, f"{at}: unknown pass {_show(instance)} (known: {known}){hint}")]
        options = ", ".join(map(str, value))
        if path[-1:] == ("algorithm",) and instance in LEGACY_ALGORITHMS:
            base, mixed = LEGACY_ALGORITHMS[instance]
            return [(path, f"{at}: {_show(instance)} is the builder's old name for algorithm {base} with some "
                           f"MatMuls in int8; set algorithm: {base} and extra_options: "
                           f"{{matmul_mixed_precision: '{mixed}'}}")]
        return [(path, f"{at}: {_show(instance)} is not one of {options}{_did_you_mean(instance, value)}")]
    if kind == "type":
        expected = _or([_type_name(t) for t in (value if isinstance(value, list) else [value])])
        quote = ""
        if "string" in expected and isinstance(instance, (int, float)) and not isinstance(instance, bool):
            quote = f" (quote it: '{instance}')"
        return [(path, f"{at}: expected {expected}, got {_show(instance)}{quote}")]
    if kind == "pattern":
        return [(path, f"{at}: {_pattern_hint(value, instance)}")]
    if kind == "minLength":
        return [(path, f"{at}: must not be empty")]
    if kind == "maxLength":
        return [(path, f"{at}: is longer than {value} characters")]
    if kind == "minItems" and path == ("passes",):
        return [(path, "passes: list at least one pass, e.g. - {type: model-builder, precision: int4}")]
    if kind == "const":
        return [(path, f"{at}: must be {_show(value)}, got {_show(instance)}")]
    return [(path, f"{at}: {error.message}")]


def _check_target(data: dict, problems: list) -> None:
    device, provider = _target(data)
    if device == "npu":
        supported = ", ".join(f"{d}+{p}" for d, ps in PROVIDERS_BY_DEVICE.items() for p in ps)
        problems.append((("target", "device"), f"target.device: 'npu' has no supported execution "
                                               f"provider yet (supported: {supported})"))
    elif device and provider and provider not in PROVIDERS_BY_DEVICE[device]:
        right_device = next(d for d, ps in PROVIDERS_BY_DEVICE.items() if provider in ps)
        problems.append((("target",), f"target: device '{device}' cannot use execution_provider "
                                      f"'{provider}'; use device {right_device} or execution_provider "
                                      f"{_or(PROVIDERS_BY_DEVICE[device])}"))


def _check_passes(data: dict, problems: list) -> None:
    passes = data.get("passes")
    if not isinstance(passes, list):
        return
    _, provider = _target(data)
    known_types = schema()["$defs"]["pass"]["properties"]["type"]["enum"]
    types = [p.get("type") if isinstance(p, dict) else None for p in passes]
    builders = [i for i, t in enumerate(types) if t == "model-builder"]

    if not builders and passes and all(t in known_types for t in types):
        problems.append((("passes",), "passes: the first pass must be model-builder "
                                      "(it reads the Hugging Face model)"))
    if builders and builders[0] != 0:
        i = builders[0]
        problems.append((("passes", i), f"passes[{i}]: model-builder must be the first pass "
                                        f"(it reads the Hugging Face model); move it to passes[0]"))
    for i in builders[1:]:
        problems.append((("passes", i), f"passes[{i}]: model-builder appears more than once "
                                        f"(first at passes[{builders[0]}]); keep one"))
    for i in builders:
        _check_builder_pass(i, passes[i], provider, problems)
    evaluations = [i for i, t in enumerate(types) if t == "evaluate"]
    for i in evaluations:
        step = passes[i]
        window, stride = step.get("window", 256), step.get("stride", 128)
        if isinstance(window, int) and isinstance(stride, int) and stride > window:
            problems.append((("passes", i, "stride"), f"passes[{i}].stride: {stride} is more than window {window}; "
                                                      "tokens between windows would never be scored"))
    if isinstance(data.get("checks"), dict) and data["checks"] and not evaluations:
        problems.append((("checks",), "checks: nothing measures them; add `- type: evaluate` after model-builder "
                                      "in passes"))


def _check_builder_pass(i: int, step: dict, provider: str | None, problems: list) -> None:
    precision = step.get("precision")
    if precision in PROVIDERS_BY_PRECISION:
        runs_on = PROVIDERS_BY_PRECISION[precision]
        if provider and provider not in runs_on:
            usable = [p for p, eps in PROVIDERS_BY_PRECISION.items() if provider in eps]
            problems.append((("passes", i, "precision"),
                             f"passes[{i}].precision: {precision} is not supported on execution_provider "
                             f"'{provider}' ({precision} runs on {', '.join(runs_on)}); use "
                             f"{_or(usable)} for {provider}"))
        if precision not in QUANTIZED:
            for knob in QUANT_KNOBS:
                if knob in step:
                    problems.append((("passes", i, knob),
                                     f"passes[{i}].{knob}: only applies to precision int4 or int8 "
                                     f"(this pass is {precision}); remove it"))
    extra = step.get("extra_options")
    if not isinstance(extra, dict):
        return
    for key in extra:
        where = ("passes", i, "extra_options", key)
        if key in EXTRA_OPTION_FIELDS:
            fix = EXTRA_OPTION_FIELDS[key].format(i=i)
            problems.append((where, f"{_format_path(where)}: {fix}"))
        elif key not in BUILDER_OPTIONS:
            close = _closest(str(key), sorted(BUILDER_OPTIONS))
            hint = (f"did you mean '{close}'?" if close else
                    "see `python -m onnxruntime_genai.models.builder --help` for the options")
            problems.append((where, f"{_format_path(where)}: not a model-builder option; {hint}"))


def _check_eval_text(data: dict, source_dir: Path, problems: list) -> None:
    passes = data.get("passes") if isinstance(data.get("passes"), list) else []
    for i, step in enumerate(passes):
        if isinstance(step, dict) and step.get("type") == "evaluate" and isinstance(step.get("text"), str):
            path = _local_path(step["text"], source_dir)
            if not path.is_file():
                problems.append((("passes", i, "text"), f"passes[{i}].text: file {path} does not exist; give a text "
                                                        "file (relative to the recipe) or leave it out for the default"))


def _check_source(data: dict, source_dir: Path, problems: list, warnings: list) -> None:
    model = data.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("source"), str) or not model["source"]:
        return
    source, revision = model["source"], model.get("revision")
    if is_local_source(source, source_dir):
        folder = _local_path(source, source_dir)
        if not folder.exists():
            problems.append((("model", "source"), f"model.source: folder {folder} does not exist"))
        elif not folder.is_dir():
            problems.append((("model", "source"), f"model.source: {folder} is a file; point it at a "
                                                  f"Hugging Face model folder (config.json, weights, tokenizer)"))
        elif not (folder / "config.json").is_file():
            problems.append((("model", "source"), f"model.source: folder {folder} has no config.json; point "
                                                  f"it at a Hugging Face model folder (config.json, weights, "
                                                  f"tokenizer)"))
        else:
            _check_block_size(data, folder, warnings)
        if revision is not None:
            warnings.append("model.revision is ignored for a local folder; remove it")
        return
    if not HUB_ID.match(source):
        problems.append((("model", "source"), f"model.source: {_show(source)} is neither an existing folder "
                                              f"nor a Hugging Face hub id (org/name)"))
        return
    if revision is None:
        warnings.append("model.revision is not pinned; builds may change when the hub repo does "
                        "(pin a 40-character commit)")
    elif isinstance(revision, str) and not COMMIT.match(revision):
        warnings.append(f"model.revision '{revision}' is a branch or tag, not a commit; builds may change "
                        f"when the hub repo does (pin a 40-character commit)")
    if model.get("trust_remote_code") is True:
        warnings.append(f"model.trust_remote_code is on: Python code from {source} will run during the build")


def _check_block_size(data: dict, folder: Path, warnings: list) -> None:
    """An int4 block wider than the model's hidden size pads every weight column of the MatMuls
    that read the hidden state to one block: a bigger file for no gain (measured in
    benchmarks/results/quality.md)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        hidden = (config.get("text_config") or config).get("hidden_size")
    except (OSError, ValueError, AttributeError):
        return
    passes = data.get("passes") if isinstance(data.get("passes"), list) else []
    for i, step in enumerate(passes):
        block = step.get("block_size") if isinstance(step, dict) else None
        if isinstance(hidden, int) and isinstance(block, int) and block > hidden:
            warnings.append(f"passes[{i}].block_size {block} is larger than the model's hidden_size {hidden}: each "
                            f"weight column is padded to one block (a bigger file, no gain); use {_fitting_block(hidden)}")


def _fitting_block(hidden: int) -> int:
    return max((b for b in (16, 32, 64, 128, 256) if b <= hidden), default=16)


def _check_foundry_name(data: dict, problems: list) -> None:
    package = data.get("package")
    foundry = package.get("foundry_local") if isinstance(package, dict) else None
    name = foundry.get("name") if isinstance(foundry, dict) else None
    _, provider = _target(data)
    if not isinstance(name, str) or provider is None:
        return
    base = name.split(":", 1)[0]
    suffix = next((s for s in FOUNDRY_SUFFIX_NEEDS if base.endswith("-" + s)), None)
    want = FOUNDRY_SUFFIX[provider]
    if suffix and suffix != want:
        problems.append((("package", "foundry_local", "name"),
                         f"package.foundry_local.name: '{name}' ends in -{suffix}, so Foundry Local would "
                         f"require {FOUNDRY_SUFFIX_NEEDS[suffix]}, but this build targets execution_provider "
                         f"'{provider}'; end the name with -{want}"))


def _check_foundry_template(data: dict, problems: list) -> None:
    package = data.get("package")
    foundry = package.get("foundry_local") if isinstance(package, dict) else None
    if not isinstance(foundry, dict) or "template_family" not in foundry:
        return
    if isinstance(foundry.get("prompt_template"), dict):
        problems.append((("package", "foundry_local", "template_family"),
                         "package.foundry_local.template_family: give either prompt_template (the four strings) "
                         "or template_family (a chat template for a tokenizer that has none), not both"))


def _with_defaults(data: dict, source_dir: Path) -> dict:
    """A copy of valid `data` with every optional field present; local sources made absolute."""
    out = copy.deepcopy(data)
    out.pop("$schema", None)  # editor metadata: not part of what gets built
    model = out["model"]
    model.setdefault("revision", None)
    model.setdefault("trust_remote_code", False)
    if is_local_source(model["source"], source_dir):
        model["source"] = str(_local_path(model["source"], source_dir))
    for step in out["passes"]:
        if step["type"] == "model-builder":
            if step["precision"] == "int4":
                for key, default in INT4_DEFAULTS.items():
                    step.setdefault(key, default)
            step.setdefault("extra_options", {})
        elif step["type"] == "evaluate" and step.get("text"):
            step["text"] = str(_local_path(step["text"], source_dir))
    foundry = out.setdefault("package", {}).setdefault("foundry_local", {})
    foundry.setdefault("name", None)
    foundry.setdefault("prompt_template", "auto")
    return out


# --- small helpers -------------------------------------------------------------------------------

def _target(data: dict) -> tuple[str | None, str | None]:
    """(device, execution_provider), each None unless it is a known value."""
    target = data.get("target")
    if not isinstance(target, dict):
        return None, None
    device, provider = target.get("device"), target.get("execution_provider")
    return (device if device in PROVIDERS_BY_DEVICE else None,
            provider if provider in FOUNDRY_SUFFIX else None)


def _local_path(source: str, base_dir: Path) -> Path:
    path = Path(os.path.expanduser(source))
    return (path if path.is_absolute() else base_dir / path).resolve()


def _format_path(path: tuple | list) -> str:
    """('passes', 0, 'precision') -> 'passes[0].precision'; () -> '(root)'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _path_sort_key(path: tuple) -> tuple:
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in path)


def _display(path: Path, root: Path) -> str:
    """`path` relative to `root` (the top recipe's folder) where it lies below it, else absolute."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _show(value: Any) -> str:
    """A value as the user wrote it: 'text', 32, true, null, a mapping, a list."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _type_name(json_type: str) -> str:
    return {"object": "mapping", "array": "list"}.get(json_type, json_type)


def _not_a_mapping(data: Any) -> str:
    got = "an empty file" if data is None else _show(data)
    return f"a recipe must be a mapping with keys name, model, target, passes; got {got}"


def _or(items: list | tuple) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _closest(word: str, options: list) -> str | None:
    """The one option clearly closest to `word` (a tie, like int5 for int4/int8, suggests none)."""
    scored = sorted(((difflib.SequenceMatcher(None, word, o).ratio(), o)
                     for o in options if isinstance(o, str)), reverse=True)
    if not scored or scored[0][0] < 0.6 or (len(scored) > 1 and scored[1][0] == scored[0][0]):
        return None
    return scored[0][1]


def _did_you_mean(value: Any, options: list) -> str:
    close = _closest(value, options) if isinstance(value, str) else None
    return f"; did you mean '{close}'?" if close else ""


def _suggest(key: str, allowed: list[str]) -> str:
    close = _closest(key, allowed)
    return f"did you mean '{close}'?" if close else f"allowed: {', '.join(allowed)}"


def _form_hint(path: tuple) -> str:
    if path[-1:] == ("prompt_template",):
        return "must be 'auto' or a mapping with system, user, assistant, prompt"
    return "does not match any allowed form; see `pipeline schema`"


def _pattern_hint(pattern: str, value: Any) -> str:
    if "Content" in pattern:
        return "must contain the {Content} placeholder"
    if pattern.endswith("(:[0-9]+)?$"):
        return (f"{_show(value)} is not a valid Foundry Local name; use letters, digits, '.', '_' and '-' "
                f"(starting with a letter or digit), optionally ':<version>'")
    if pattern.startswith("^[A-Za-z0-9][A-Za-z0-9._-]*"):
        return (f"{_show(value)} is not a valid name; use letters, digits, '.', '_' and '-' "
                f"(starting with a letter or digit)")
    return f"{_show(value)} does not match the pattern {pattern}"
