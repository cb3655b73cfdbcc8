"""`pipeline check FOLDER`: does a model folder hold what a runtime needs, before anyone runs it?

What a runtime accepts is data, one file per runtime in pipeline/data/runtimes/ (foundry-local.json:
ONNX Runtime 1.26.0 + ONNX Runtime GenAI 0.14.1, each fact with its source). The checks, cheapest
first; each problem becomes a Finding, so one run shows every problem:

    files              the files genai_config.json names, their external data, inference_model.json's Name
    hashes             every file still matches the sha256 and size build.json recorded
    genai-config-keys  genai_config.json holds only keys the runtime's ONNX Runtime GenAI parses
    model-type         model.type is one that runtime can create
    ir-version, opset  every .onnx file is within what the runtime's ONNX Runtime loads
    session            the model loads with onnxruntime-genai on CPU (CPU folders only), and in the
                       runtime's own versions when a Python with them is given
    tokenizer          the tokenizer loads and gives back the text it encoded
    template           PromptTemplate has its four parts and agrees with the shipped chat template
    name-suffix        the Name's device suffix agrees with the execution provider genai_config.json sets
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.cache import sha256_file
from pipeline.errors import PipelineError

RUNTIMES_DIR = Path(__file__).parent / "data" / "runtimes"
BUILD_INFO, BUILD_LOCK = "build.json", "build.lock.json"
TEMPLATE_KEYS = ("system", "user", "assistant", "prompt")
CONTENT = "{Content}"
# Plain ASCII: a WordPiece or unigram vocabulary without byte fallback still gives it back unchanged.
ROUND_TRIP_TEXT = "Hello, world! Checking 1, 2, 3: does this text come back unchanged?"
# Texts for comparing PromptTemplate with the chat template: braces and newlines must survive.
_SYSTEM = "Answer briefly. {Braces} stay as they are.\nSecond line."
_TURNS = ("Hi {name}!\nWhat does {Content} mean?", "It is a placeholder.\n{ok}", "And {x}?")


def _load_runtimes() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(RUNTIMES_DIR.glob("*.json"))}


RUNTIMES: dict[str, dict[str, Any]] = _load_runtimes()


@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warning"
    check: str  # the check's id, e.g. "files", "hashes", "genai-config-keys"
    message: str  # one line: what is wrong and what to do


@dataclass(frozen=True)
class CheckReport:
    folder: Path
    runtime: str
    findings: tuple[Finding, ...]
    checked: tuple[str, ...]  # ids of the checks that ran

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.level == "error")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.level == "warning")


def check_folder(folder: Path, runtime: str = "foundry-local", *, runtime_python: str | None = None) -> CheckReport:
    """Check `folder` against what `runtime` needs. Never raises for a bad folder: every problem is
    a Finding. An unknown runtime raises PipelineError listing the known ones.

    The session check loads CPU folders with this environment's onnxruntime-genai. `runtime_python`
    (default: $PIPELINE_FOUNDRY_PYTHON, which `make test` sets) is the Python of an environment
    with the runtime's own versions (`make foundry-venv`); when given, the model is loaded there
    too, which catches what only that runtime refuses (operator attributes it lacks)."""
    if runtime not in RUNTIMES:
        raise PipelineError(f"unknown runtime {runtime!r} (known: {', '.join(sorted(RUNTIMES))})")
    if runtime_python is None:
        runtime_python = os.environ.get("PIPELINE_FOUNDRY_PYTHON") or None
    ctx = _Context(Path(folder), runtime, RUNTIMES[runtime], runtime_python)
    if not ctx.folder.is_dir():
        what = "does not exist" if not ctx.folder.exists() else "is not a folder"
        ctx.error("files", f"{ctx.folder} {what}; pass a model folder such as artifacts/<name>")
        return ctx.report(["files"])
    checked = []
    for name, run in _CHECKS:
        if run(ctx) is not False:  # False: the check could not run (another finding says why)
            checked.append(name)
    return ctx.report(checked)


@dataclass
class _Context:
    folder: Path
    runtime: str
    spec: dict[str, Any]
    runtime_python: str | None = None
    findings: list[Finding] = field(default_factory=list)
    genai: dict | None = None  # genai_config.json, when it is a readable object
    info: dict | None = None  # inference_model.json, when it is a readable object
    name: str | None = None  # inference_model.json's Name, when it is a string
    build: dict | None = None  # build.json (else build.lock.json), when readable
    models: dict[str, Any] = field(default_factory=dict)  # relative path -> ModelProto without weights
    missing: set[str] = field(default_factory=set)  # relative paths already reported missing
    blocked: set[str] = field(default_factory=set)  # checks whose errors make loading the model pointless
    og_model: Any = None  # the onnxruntime-genai model, once the session check loaded it

    def error(self, check: str, message: str) -> None:
        self.findings.append(Finding("error", check, message))

    def warn(self, check: str, message: str) -> None:
        self.findings.append(Finding("warning", check, message))

    def report(self, checked: list[str]) -> CheckReport:
        return CheckReport(self.folder, self.runtime, tuple(self.findings), tuple(checked))

    @property
    def genai_label(self) -> str:
        return f"ONNX Runtime GenAI {self.spec['onnxruntime_genai']} ({self.spec.get('label', self.runtime)})"

    @property
    def ort_label(self) -> str:
        return f"ONNX Runtime {self.spec['onnxruntime']} ({self.spec.get('label', self.runtime)})"


# -- files ---------------------------------------------------------------------------------------

def _check_files(ctx: _Context) -> None:
    ctx.genai = _read_object(ctx, "genai_config.json", "Foundry Local lists only folders that hold one; rebuild "
                             "the folder")
    ctx.info = _read_object(ctx, "inference_model.json", 'Foundry Local needs it, with a string "Name"; rebuild '
                            "the folder")
    if ctx.info is not None:
        name = ctx.info.get("Name")
        if isinstance(name, str) and name.strip():
            ctx.name = name
        else:
            ctx.error("files", 'inference_model.json has no string "Name", so Foundry Local does not list the model; '
                      'add one, e.g. "Name": "<model>-<precision>-generic-cpu"')
    if (ctx.folder / "download.tmp").exists():
        ctx.error("files", "download.tmp is present: Foundry Local treats the folder as an unfinished download; "
                  "delete it once the folder is complete")
    if ctx.genai is None:
        return
    for path, value in _named_files(ctx.genai.get("model")):
        target = _inside(ctx.folder, value)
        if target is None:
            ctx.error("files", f"genai_config.json: {path} is {value!r}, which is outside the folder; name a file "
                      "inside it")
            ctx.blocked.add("files")
        elif not target.is_file():
            ctx.error("files", f"genai_config.json: {path} names {value}, which is missing from the folder; copy it "
                      "in or rebuild")
            ctx.missing.add(value)
            ctx.blocked.add("files")
        elif target.suffix == ".onnx":
            model = _load_onnx(ctx, target)
            if model is not None:
                _check_external_data(ctx, target, model)


def _named_files(node: Any, path: str = "model"):
    """(json path, value) of every string whose key ends in "filename", anywhere under `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("filename") and isinstance(value, str):
                yield f"{path}.{key}", value
            else:
                yield from _named_files(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _named_files(value, f"{path}[{i}]")


def _inside(folder: Path, name: str) -> Path | None:
    """folder/name, or None when name is absolute or climbs out of the folder."""
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        return None
    return folder / name


def _load_onnx(ctx: _Context, path: Path):
    """The ModelProto of `path` without its external data (cached), or None after an error finding."""
    rel = path.relative_to(ctx.folder).as_posix()
    if rel not in ctx.models:
        import onnx

        try:
            ctx.models[rel] = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # protobuf raises its own DecodeError; any failure means unreadable
            ctx.error("files", f"{rel} is not a readable ONNX model ({type(e).__name__}: {e}); copy it again or "
                      "rebuild")
            ctx.blocked.add("files")
            ctx.models[rel] = None
    return ctx.models[rel]


def _check_external_data(ctx: _Context, model_path: Path, model) -> None:
    """Every external data file the model refers to exists and is long enough."""
    rel = model_path.relative_to(ctx.folder).as_posix()
    needed: dict[str, tuple[int, str]] = {}  # location -> (bytes needed, tensor needing the most)
    for tensor in _tensors(model):
        meta = {entry.key: entry.value for entry in tensor.external_data}
        location = meta.get("location", "")
        try:
            end = int(meta.get("offset") or 0) + int(meta.get("length") or 0)
        except ValueError:
            ctx.error("files", f"{rel}: tensor {tensor.name} has a malformed external data offset or length; rebuild")
            ctx.blocked.add("files")
            continue
        if location not in needed or end > needed[location][0]:
            needed[location] = (end, tensor.name)
    for location, (end, tensor_name) in sorted(needed.items()):
        target = _inside(model_path.parent, location)
        where = (model_path.parent / location).relative_to(ctx.folder).as_posix() if target else location
        if target is None:
            ctx.error("files", f"{rel} keeps weights in {location!r}, outside the folder; ONNX Runtime refuses "
                      "that: save the model with its data beside it")
        elif not target.is_file():
            ctx.error("files", f"{rel} keeps its weights in {where}, which is missing from the folder; copy it in "
                      "or rebuild")
            ctx.missing.add(where)
        elif target.stat().st_size < end:
            ctx.error("files", f"{where} is {target.stat().st_size} bytes but {rel} needs {end} (tensor "
                      f"{tensor_name}): the file is truncated; copy it again or rebuild")
        else:
            continue
        ctx.blocked.add("files")


def _tensors(model):
    """Every tensor stored outside the model file: initializers, sparse initializers and tensor
    attributes, in the main graph, subgraphs and functions."""
    from onnx import TensorProto

    def graph_tensors(graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            yield from node_tensors(node)

    def node_tensors(node):
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from graph_tensors(attr.g)
            for graph in attr.graphs:
                yield from graph_tensors(graph)

    def all_tensors():
        yield from graph_tensors(model.graph)
        for function in model.functions:
            for node in function.node:
                yield from node_tensors(node)

    return (t for t in all_tensors() if t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL)


# -- hashes --------------------------------------------------------------------------------------

def _check_hashes(ctx: _Context) -> bool | None:
    records = [(name, _read_json(ctx.folder / name)) for name in (BUILD_INFO, BUILD_LOCK)]
    usable = [(name, data) for name, data in records if isinstance(data, dict) and isinstance(data.get("files"), dict)]
    if not usable:
        present = [name for name in (BUILD_INFO, BUILD_LOCK) if (ctx.folder / name).exists()]
        if present:
            ctx.warn("hashes", f"{' and '.join(present)} unreadable or without a file list: hashes cannot be checked; "
                     "rebuild the folder")
        else:
            ctx.warn("hashes", "not built by pipeline (no build.json): hashes cannot be checked")
        return False
    recorded_in, ctx.build = usable[0]
    if recorded_in != BUILD_INFO:
        ctx.warn("hashes", f"no readable {BUILD_INFO}; checked the hashes {recorded_in} records")
    recorded = ctx.build["files"]
    for rel, meta in sorted(recorded.items()):
        path = _inside(ctx.folder, rel)
        if path is None or not isinstance(meta, dict):
            ctx.error("hashes", f"{recorded_in} lists {rel!r} oddly; rebuild the folder")
            continue
        if not path.is_file():
            if rel not in ctx.missing:  # the files check has said so already
                ctx.error("hashes", f"{rel} is recorded in {recorded_in} but missing; copy the folder again or rebuild")
            continue
        size = path.stat().st_size
        if size != meta.get("size"):
            ctx.error("hashes", f"{rel} changed since the build ({size} bytes, {recorded_in} records "
                      f"{meta.get('size')}); copy it again or rebuild")
        elif sha256_file(path) != meta.get("sha256"):
            ctx.error("hashes", f"{rel} changed since the build (its sha256 differs from {recorded_in}); copy it "
                      "again or rebuild")
    for path in sorted(p for p in ctx.folder.rglob("*") if p.is_file()):
        rel = path.relative_to(ctx.folder).as_posix()
        if rel not in recorded and rel not in (BUILD_INFO, BUILD_LOCK):
            ctx.warn("hashes", f"{rel} is not recorded in {recorded_in} (added after the build?); remove it or "
                     "rebuild")
    return None


# -- genai_config.json ---------------------------------------------------------------------------

_KIND = {"values": "a value", "objects": "an object", "arrays": "an array"}


def _check_genai_keys(ctx: _Context) -> bool | None:
    if ctx.genai is None:
        return False
    grammar = ctx.spec["genai_config"]
    problems: list[str] = []
    _walk_section(ctx.genai, grammar["root"], grammar["definitions"], "", problems)
    hints = grammar.get("hints", {})
    for path, problem in problems:
        if problem == "unknown":
            advice = hints.get(re.sub(r"\[\d+\]", "", path), "remove it or rebuild without the option that adds it")
            ctx.error("genai-config-keys", f"genai_config.json: {path} is not known to {ctx.genai_label}; {advice}")
        else:
            ctx.error("genai-config-keys", f"genai_config.json: {path} {problem}, or {ctx.genai_label} refuses "
                      "the file; fix it or rebuild")
    if problems:
        ctx.blocked.add("genai-config-keys")
    return None


def _walk_section(node: dict, section: dict, definitions: dict, path: str, problems: list) -> None:
    for key, value in node.items():
        _dispatch(key, value, section, definitions, f"{path}.{key}" if path else key, problems)


def _dispatch(key: str, value: Any, section: dict, definitions: dict, path: str, problems: list) -> None:
    """Check one member `key: value` of an object (or element of an array, key "") against the
    section that parses it, as the runtime's parser does: by the kind of the value."""
    section = _resolve(section, definitions)
    kind = "objects" if isinstance(value, dict) else "arrays" if isinstance(value, list) else "values"
    spec = section.get(kind, {}).get(key, section.get(f"any_{kind[:-1]}"))
    if spec is None:
        other = [k for k in ("values", "objects", "arrays") if k != kind and key in section.get(k, {})]
        if other:
            wanted = " or ".join(_article(section[k][key]) if k == "values" else _KIND[k] for k in other)
            problems.append((path, f"must be {wanted}, not {_KIND[kind]}"))
        else:
            problems.append((path, "unknown"))
    elif kind == "objects":
        _walk_section(value, spec, definitions, path, problems)
    elif kind == "arrays":
        for i, element in enumerate(value):
            _dispatch("", element, spec, definitions, f"{path}[{i}]", problems)
    elif not _scalar_fits(value, spec):
        problems.append((path, f"must be {_article(spec)}, not {_json_type(value)}"))


def _resolve(section: dict, definitions: dict) -> dict:
    while "$ref" in section:
        section = definitions[section["$ref"]]
    return section


def _scalar_fits(value: Any, spec: str) -> bool:
    if spec == "any":
        return True
    if spec == "string":
        return isinstance(value, str)
    if spec == "bool":
        return isinstance(value, bool)
    if spec == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    raise ValueError(f"unknown scalar type {spec!r} in the runtime data")


def _article(spec: str) -> str:
    return {"string": "a string", "number": "a number", "bool": "true or false", "any": "a value"}[spec]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    return "a string" if isinstance(value, str) else "a number"


def _check_model_type(ctx: _Context) -> bool | None:
    if ctx.genai is None or not isinstance(ctx.genai.get("model"), dict):
        if ctx.genai is not None:
            ctx.error("model-type", f"genai_config.json has no \"model\" object; {ctx.genai_label} needs one; rebuild")
            ctx.blocked.add("model-type")
            return None
        return False
    model_type = ctx.genai["model"].get("type")
    known = ctx.spec["model_types"]
    if model_type not in known:
        shown = "no model.type" if model_type is None else f"model.type {model_type!r}"
        ctx.error("model-type", f"genai_config.json has {shown}, which {ctx.genai_label} cannot create (it knows "
                  f"{', '.join(known)}); build with a supported architecture")
        ctx.blocked.add("model-type")
    return None


# -- ONNX files ----------------------------------------------------------------------------------

def _onnx_models(ctx: _Context) -> list[tuple[str, Any]]:
    """Every readable .onnx file in the folder: those genai_config.json names and any others."""
    for path in sorted(ctx.folder.rglob("*.onnx")):
        if path.is_file():
            _load_onnx(ctx, path)
    return [(rel, model) for rel, model in sorted(ctx.models.items()) if model is not None]


def _check_ir_version(ctx: _Context) -> bool | None:
    limit = ctx.spec["onnx"]["max_ir_version"]
    models = _onnx_models(ctx)
    if not models:
        return False
    for rel, model in models:
        if model.ir_version > limit:
            ctx.error("ir-version", f"{rel} has ONNX IR version {model.ir_version}; {ctx.ort_label} loads up to "
                      f"{limit}: export with an onnx that writes IR {limit} or lower, or rebuild")
            ctx.blocked.add("ir-version")
    return None


def _check_opset(ctx: _Context) -> bool | None:
    limits = ctx.spec["onnx"]["max_opset"]
    models = _onnx_models(ctx)
    if not models:
        return False
    for rel, model in models:
        for opset in model.opset_import:
            domain = opset.domain or "ai.onnx"
            if domain in limits and opset.version > limits[domain]:
                ctx.error("opset", f"{rel} imports {domain} opset {opset.version}; {ctx.ort_label} supports up to "
                          f"{limits[domain]}: convert the model to opset {limits[domain]} or rebuild with an older "
                          "exporter")
                ctx.blocked.add("opset")
    return None


# -- loading: session and tokenizer ---------------------------------------------------------------

def _provider(ctx: _Context) -> str | None:
    """The first execution provider genai_config.json configures, lower-cased; "cpu" when none is;
    None when the config cannot tell."""
    try:
        options = ctx.genai["model"]["decoder"]["session_options"].get("provider_options", [])
    except (KeyError, TypeError, AttributeError):
        return "cpu" if ctx.genai is not None and isinstance(ctx.genai.get("model"), dict) else None
    if not isinstance(options, list):
        return None
    if not options:
        return "cpu"
    first = options[0]
    return next(iter(first)).lower() if isinstance(first, dict) and first else None


def _check_session(ctx: _Context) -> bool | None:
    """Load the model with onnxruntime-genai (CPU folders only); keep it for the tokenizer check."""
    provider = _provider(ctx)
    if provider != "cpu":
        if provider is not None and ctx.genai is not None:
            ctx.warn("session", f"the ONNX session was not checked: genai_config.json configures {provider}, and "
                     "this check creates sessions on CPU only; load the folder on a machine with that device")
        return False
    if ctx.blocked:
        return False  # the errors found already say why it would not load
    import onnxruntime_genai as og

    try:
        ctx.og_model = og.Model(str(ctx.folder))
    except Exception as e:
        ctx.error("session", f"the model does not load in onnxruntime-genai {og.__version__} on CPU: "
                  f"{_one_line(e)}; rebuild the folder")
        ctx.blocked.add("session")
        return None
    if ctx.runtime_python:
        _load_in_runtime(ctx)
    return None


# Run by the runtime's own Python, which has nothing but the runtime: load the model, say what happened.
_LOAD_SCRIPT = """
import json, sys
import onnxruntime, onnxruntime_genai as og
out = {"onnxruntime": onnxruntime.__version__, "onnxruntime_genai": og.__version__, "error": None}
try:
    og.Model(sys.argv[1])
except Exception as e:
    out["error"] = str(e)
print(json.dumps(out))
"""


def _load_in_runtime(ctx: _Context) -> None:
    """Load the model with the runtime's own onnxruntime-genai, in its Python."""
    wanted = {k: ctx.spec[k] for k in ("onnxruntime", "onnxruntime_genai")}
    try:
        done = subprocess.run([ctx.runtime_python, "-c", _LOAD_SCRIPT, str(ctx.folder.resolve())],
                              check=False, capture_output=True, text=True, timeout=600)
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        ctx.warn("session", f"could not load the model with {ctx.runtime_python} ({_one_line(e)}); point "
                 "PIPELINE_FOUNDRY_PYTHON at a Python with the runtime (make foundry-venv)")
        return
    found = {k: result.get(k) for k in wanted}
    if found != wanted:
        ctx.warn("session", f"{ctx.runtime_python} has onnxruntime {found['onnxruntime']} and onnxruntime-genai "
                 f"{found['onnxruntime_genai']}, not the runtime's {wanted['onnxruntime']} and "
                 f"{wanted['onnxruntime_genai']}, so the model was not loaded there: make foundry-venv")
    elif result.get("error"):
        ctx.error("session", f"the model does not load in {ctx.genai_label}: {_one_line(Exception(result['error']))}; "
                  "rebuild with options that runtime supports")
        ctx.blocked.add("session")


def _check_tokenizer(ctx: _Context) -> bool | None:
    if not (ctx.folder / "tokenizer.json").is_file():
        ctx.error("tokenizer", "tokenizer.json is missing; Foundry Local's runtime needs it: copy it from the model "
                  "or rebuild")
        return None
    if not (ctx.folder / "tokenizer_config.json").is_file():
        ctx.warn("tokenizer", "tokenizer_config.json is missing; Foundry Local expects it beside tokenizer.json: copy "
                 "it from the model or rebuild")
    model = ctx.og_model
    if model is not None:
        import onnxruntime_genai as og

        loader = f"onnxruntime-genai {og.__version__}"
        try:
            tokenizer = og.Tokenizer(model)
            ids = [int(i) for i in tokenizer.encode(ROUND_TRIP_TEXT)]
            back = tokenizer.decode(ids)
        except Exception as e:
            ctx.error("tokenizer", f"the tokenizer does not load or run in {loader}: {_one_line(e)}; check "
                      "tokenizer.json and tokenizer_config.json or rebuild")
            return None
    else:
        from tokenizers import Tokenizer

        loader = "tokenizers (the ONNX session was not loaded)"
        try:
            tokenizer = Tokenizer.from_file(str(ctx.folder / "tokenizer.json"))
            ids = tokenizer.encode(ROUND_TRIP_TEXT, add_special_tokens=False).ids
            back = tokenizer.decode(ids, skip_special_tokens=True)
        except Exception as e:
            ctx.error("tokenizer", f"tokenizer.json does not load or run in {loader}: {_one_line(e)}; copy it "
                      "again or rebuild")
            return None
    if not ids:
        ctx.error("tokenizer", f"the tokenizer turns {ROUND_TRIP_TEXT!r} into no tokens; check tokenizer.json")
    elif back.strip() != ROUND_TRIP_TEXT:
        ctx.warn("tokenizer", f"the tokenizer does not give back what it encoded: {ROUND_TRIP_TEXT!r} -> "
                 f"{back!r} ({loader}); check its normalizer and decoder")
    return None


def _one_line(e: Exception, limit: int = 600) -> str:
    """The exception's message on one line; a long one keeps its start and its end, where runtimes
    put the reason."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else f"{text[:limit // 3]} ... {text[-(limit * 2 // 3):]}"


# -- PromptTemplate ------------------------------------------------------------------------------

def _check_template(ctx: _Context) -> bool | None:
    from pipeline.packaging.templates import fill, load_tokenizer_template, render_chat_template

    if ctx.info is None:
        return False
    template = ctx.info.get("PromptTemplate")
    if not isinstance(template, dict):
        ctx.error("template", "inference_model.json has no PromptTemplate object; Foundry Local formats prompts with "
                  "it: add system, user, assistant and prompt, each with {Content}, or rebuild")
        return None
    bad = False
    for key in TEMPLATE_KEYS:
        part = template.get(key)
        if not isinstance(part, str):
            ctx.error("template", f"inference_model.json: PromptTemplate.{key} is missing; add it with one "
                      f"{CONTENT} where the message text goes, or rebuild")
            bad = True
        elif part.count(CONTENT) != 1:
            ctx.error("template", f"inference_model.json: PromptTemplate.{key} holds {CONTENT} "
                      f"{part.count(CONTENT)} times, not once: {part!r}; Foundry Local puts the message text "
                      "there, so write it exactly once")
            bad = True
    try:
        chat_template, special_tokens = load_tokenizer_template(ctx.folder)
    except PipelineError as e:
        ctx.error("template", f"the chat template cannot be read: {e}")
        return None
    if not chat_template:
        ctx.warn("template", "the folder has no chat template (chat_template.jinja or tokenizer_config.json's "
                 "chat_template), so PromptTemplate cannot be checked against it; newer Foundry Local builds "
                 "prompts from it: ship the model's chat template")
        return None
    _compare_shipped_templates(ctx, chat_template)
    if bad:
        return None

    def render(messages):
        return render_chat_template(chat_template, messages, add_generation_prompt=True,
                                    special_tokens=special_tokens)

    system = {"role": "system", "content": _SYSTEM}
    u1, a1, u2 = ({"role": r, "content": c} for r, c in zip(("user", "assistant", "user"), _TURNS))
    conversations = [[system, u1], [system, u1, a1, u2]]
    try:
        render(conversations[0])
    except Exception:  # some templates refuse a system turn (Gemma): compare the turns they take
        conversations = [[u1], [u1, a1, u2]]
    approximate = (ctx.build or {}).get("foundry_local", {}).get("prompt_template_exact") is False
    for messages in conversations:
        roles = " + ".join(m["role"] for m in messages)
        try:
            expected = render(messages)
        except Exception as e:
            ctx.warn("template", f"the chat template fails to render {roles} ({_one_line(e)}); PromptTemplate could "
                     "not be compared with it")
            return None
        got = fill(template, messages)
        if expected == got:
            continue
        at = next((i for i, (x, y) in enumerate(zip(expected, got)) if x != y), min(len(expected), len(got)))
        difference = (f"for {roles} the chat template gives {expected[at:at + 50]!r} from character {at}, "
                      f"PromptTemplate gives {got[at:at + 50]!r}")
        if approximate:
            ctx.warn("template", f"PromptTemplate approximates the chat template, as build.json records: {difference}")
        else:
            ctx.error("template", f"PromptTemplate disagrees with the chat template: {difference}; rebuild with "
                      "prompt_template: auto or fix inference_model.json")
        return None
    return None


def _compare_shipped_templates(ctx: _Context, chat_template: str) -> None:
    """chat_template.jinja and tokenizer_config.json's chat_template, when both exist, should agree."""
    config = _read_json(ctx.folder / "tokenizer_config.json")
    inline = config.get("chat_template") if isinstance(config, dict) else None
    if (ctx.folder / "chat_template.jinja").is_file() and isinstance(inline, str) and inline != chat_template:
        ctx.warn("template", "chat_template.jinja and tokenizer_config.json's chat_template differ; runtimes read "
                 "one or the other: make them the same")


# -- Name ----------------------------------------------------------------------------------------

def _check_name_suffix(ctx: _Context) -> bool | None:
    if ctx.name is None or ctx.genai is None:
        return False
    provider = _provider(ctx)
    if provider is None:
        return False
    table: dict[str, list[str]] = ctx.spec["name_suffixes"]
    base, _, version = ctx.name.rpartition(":")
    name = base if base and version.isdigit() else ctx.name
    expected = table.get(provider)
    if expected is None:
        ctx.warn("name-suffix", f"genai_config.json configures the {provider} execution provider, which has no "
                 "Foundry Local name suffix this check knows; make sure the Name's suffix selects it")
        return None
    suffixes = sorted({s for group in table.values() for s in group}, key=len, reverse=True)
    found = next((s for s in suffixes if name == s or name.endswith(f"-{s}")), None)
    if found in expected:
        return None
    stem = name[: -len(found)].rstrip("-") if found else name
    suggestion = f"{stem}-{expected[0]}"
    if found is None:
        ctx.warn("name-suffix", f"Name {ctx.name!r} has no device suffix ({', '.join(suffixes)}); Foundry Local "
                 f"picks the execution provider from it: rename it to {suggestion!r}")
    else:
        ctx.error("name-suffix", f"Name {ctx.name!r} ends in -{found}, but genai_config.json configures the "
                  f"{provider} execution provider, which needs -{' or -'.join(expected)}: rename it to "
                  f"{suggestion!r} in inference_model.json")
    return None


# -- reading -------------------------------------------------------------------------------------

def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_object(ctx: _Context, name: str, why: str) -> dict | None:
    path = ctx.folder / name
    if not path.is_file():
        ctx.error("files", f"{name} is missing: {why}")
        ctx.missing.add(name)
        ctx.blocked.add("files")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        ctx.error("files", f"{name} is not valid JSON ({_one_line(e)}); fix it or rebuild")
        ctx.blocked.add("files")
        return None
    if not isinstance(data, dict):
        ctx.error("files", f"{name} holds {type(data).__name__}, not a JSON object; fix it or rebuild")
        ctx.blocked.add("files")
        return None
    return data


_CHECKS = (
    ("files", _check_files),
    ("hashes", _check_hashes),
    ("genai-config-keys", _check_genai_keys),
    ("model-type", _check_model_type),
    ("ir-version", _check_ir_version),
    ("opset", _check_opset),
    ("session", _check_session),
    ("tokenizer", _check_tokenizer),
    ("template", _check_template),
    ("name-suffix", _check_name_suffix),
)
