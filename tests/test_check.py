"""`check_folder`: real builds pass; each way of breaking a folder gives exactly its check's error."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import PRECISIONS, REPO
from pipeline.check import RUNTIMES, check_folder
from pipeline.errors import PipelineError

SPEC = RUNTIMES["foundry-local"]


def errors(report) -> list[str]:
    return [f.check for f in report.findings if f.level == "error"]


def only_error(report, check: str):
    """The one error of `report`, asserting there is exactly one and it comes from `check`."""
    found = [f for f in report.findings if f.level == "error"]
    assert [f.check for f in found] == [check], "\n".join(f"{f.check}: {f.message}" for f in report.findings)
    return found[0]


def restamp(folder: Path) -> None:
    """Record the folder's current files in build.json, as if it had been built this way, so that
    only the check under test sees the change."""
    info_path = folder / "build.json"
    info = json.loads(info_path.read_text(encoding="utf-8"))
    info["files"] = {
        p.relative_to(folder).as_posix(): {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "size": p.stat().st_size}
        for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in ("build.json", "build.lock.json")}
    info_path.write_text(json.dumps(info, indent=2), encoding="utf-8")


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


@pytest.fixture
def copy_of(built, tmp_path):
    """A private copy of a built folder (int4 unless asked otherwise) that a test may break."""
    def make(precision: str = "int4") -> Path:
        dst = tmp_path / f"copy-{precision}"
        shutil.copytree(built[precision], dst)
        return dst
    return make


# -- built folders pass ----------------------------------------------------------------------------

@pytest.mark.parametrize("precision", PRECISIONS)
def test_built_folders_pass(built, precision):
    report = check_folder(built[precision])
    assert report.ok, "\n".join(f"{f.level} {f.check}: {f.message}" for f in report.findings)
    assert report.findings == ()
    assert report.runtime == "foundry-local"
    assert set(report.checked) >= {"files", "hashes", "genai-config-keys", "ir-version", "opset", "session",
                                   "tokenizer", "template", "name-suffix"}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_builder_keys_are_known_to_foundry_runtime(built, precision):
    """Every key the 0.18 builder writes for the tiny model is one 0.14.1 parses; otherwise our own
    builds would not load in Foundry Local."""
    from pipeline.check import _walk_section

    grammar = SPEC["genai_config"]
    genai = json.loads((built[precision] / "genai_config.json").read_text(encoding="utf-8"))
    problems = []
    _walk_section(genai, grammar["root"], grammar["definitions"], "", problems)
    assert problems == []


def test_unknown_runtime_lists_known_ones(built):
    with pytest.raises(PipelineError, match="unknown runtime 'ollama' \\(known: foundry-local\\)"):
        check_folder(built["int4"], runtime="ollama")


def test_not_a_folder(tmp_path):
    report = check_folder(tmp_path / "nope")
    assert not report.ok and report.checked == ("files",)
    assert "does not exist" in only_error(report, "files").message


def test_runtime_data_records_its_sources():
    assert SPEC["onnxruntime"] == "1.26.0" and SPEC["onnxruntime_genai"] == "0.14.1"
    assert SPEC["onnx"]["max_ir_version"] == 13
    assert SPEC["onnx"]["max_opset"]["ai.onnx"] == 26 and SPEC["onnx"]["max_opset"]["com.microsoft"] == 1
    assert "rel-0.14.1" in SPEC["genai_config"]["source"] and "src/config.cpp" in SPEC["genai_config"]["source"]
    assert "onnxruntime 1.26.0" in SPEC["onnx"]["source"]


# -- each check, broken one way ------------------------------------------------------------------

def test_missing_external_data(copy_of):
    folder = copy_of()
    (folder / "model.onnx.data").unlink()
    report = check_folder(folder)
    message = only_error(report, "files").message
    assert "model.onnx keeps its weights in model.onnx.data, which is missing" in message
    assert "session" not in report.checked  # no point loading a model without its weights


def test_truncated_external_data(copy_of):
    folder = copy_of()
    data = folder / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:1000])
    restamp(folder)
    message = only_error(check_folder(folder), "files").message
    assert "model.onnx.data is 1000 bytes but model.onnx needs" in message and "truncated" in message


def test_missing_file_named_in_genai_config(copy_of):
    folder = copy_of()
    edit_json(folder / "genai_config.json", lambda c: c["model"]["decoder"].__setitem__("filename", "decoder.onnx"))
    restamp(folder)
    message = only_error(check_folder(folder), "files").message
    assert message.startswith("genai_config.json: model.decoder.filename names decoder.onnx, which is missing")


def test_flipped_byte(copy_of):
    folder = copy_of()
    data = bytearray((folder / "model.onnx.data").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "model.onnx.data").write_bytes(bytes(data))
    message = only_error(check_folder(folder), "hashes").message
    assert message.startswith("model.onnx.data changed since the build (its sha256 differs from build.json)")


def test_unrecorded_file_and_no_build_json_warn(copy_of):
    folder = copy_of()
    (folder / "notes.txt").write_text("hello", encoding="utf-8")
    report = check_folder(folder)
    assert report.ok
    assert [(f.check, f.message.split(" (")[0]) for f in report.warnings] == [
        ("hashes", "notes.txt is not recorded in build.json")]
    (folder / "build.json").unlink()
    (folder / "build.lock.json").unlink()
    report = check_folder(folder)
    assert report.ok and "hashes" not in report.checked
    assert [f.message for f in report.warnings] == ["not built by pipeline (no build.json): hashes cannot be checked"]


def test_unknown_genai_config_key(copy_of):
    folder = copy_of()
    edit_json(folder / "genai_config.json", lambda c: c["model"]["decoder"].__setitem__("foo", 1))
    restamp(folder)
    report = check_folder(folder)
    assert only_error(report, "genai-config-keys").message == (
        "genai_config.json: model.decoder.foo is not known to ONNX Runtime GenAI 0.14.1 (Foundry Local's runtime); "
        "remove it or rebuild without the option that adds it")


def test_genai_config_paths_and_types(copy_of):
    folder = copy_of()

    def change(c):
        c["search"]["top_k"] = None
        c["model"]["decoder"]["session_options"]["provider_options"] = [{"cuda": {"device_filtering_options": {
            "vendor": 1}}}]
        c["model"]["decoder"]["session_options"]["ep.custom_entry"] = "1"  # ORT config entries pass through
        c["model"]["decoder"]["filename"] = {"path": "model.onnx"}
    edit_json(folder / "genai_config.json", change)
    restamp(folder)
    messages = [f.message for f in check_folder(folder).findings if f.check == "genai-config-keys"]
    assert any("model.decoder.session_options.provider_options[0].cuda.device_filtering_options.vendor is not known"
               in m for m in messages)
    assert any("search.top_k must be a number, not null" in m for m in messages)
    assert any("model.decoder.filename must be a string, not an object" in m for m in messages)
    assert len(messages) == 3


def test_builder_key_unknown_to_runtime_gets_a_hint(copy_of):
    """onnxruntime-genai 0.18 writes sliding_window.cache_slack for models with a sliding window
    (Phi-3, Phi-4-mini, ...); 0.14.1 refuses it."""
    folder = copy_of()
    edit_json(folder / "genai_config.json", lambda c: c["model"]["decoder"].__setitem__("sliding_window", {
        "window_size": 4096, "slide_key_value_cache": False, "slide_inputs": False, "layers": [], "cache_slack": 0}))
    restamp(folder)
    message = only_error(check_folder(folder), "genai-config-keys").message
    assert message.startswith("genai_config.json: model.decoder.sliding_window.cache_slack is not known to ONNX Runtime "
                              "GenAI 0.14.1 (Foundry Local's runtime); onnxruntime-genai 0.18's builder writes it")
    assert "windowed_kv_cache: false" in message


def test_unknown_model_type(copy_of):
    folder = copy_of()
    edit_json(folder / "genai_config.json", lambda c: c["model"].__setitem__("type", "qwen9"))
    restamp(folder)
    assert "model.type 'qwen9', which ONNX Runtime GenAI 0.14.1" in only_error(check_folder(folder), "model-type").message


def test_too_new_ir_version(copy_of):
    import onnx

    folder = copy_of()
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    model.ir_version = SPEC["onnx"]["max_ir_version"] + 1
    onnx.save(model, str(folder / "model.onnx"))  # external data references are kept as they are
    restamp(folder)
    report = check_folder(folder)
    assert only_error(report, "ir-version").message.startswith(
        "model.onnx has ONNX IR version 14; ONNX Runtime 1.26.0 (Foundry Local's runtime) loads up to 13")


def test_too_new_opset(copy_of):
    import onnx

    folder = copy_of()
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for opset in model.opset_import:
        if opset.domain == "com.microsoft":
            opset.version = 2
    onnx.save(model, str(folder / "model.onnx"))
    restamp(folder)
    assert "imports com.microsoft opset 2" in only_error(check_folder(folder), "opset").message


def test_corrupted_tokenizer(copy_of):
    folder = copy_of()
    text = (folder / "tokenizer.json").read_text(encoding="utf-8")
    (folder / "tokenizer.json").write_text(text[: len(text) // 2], encoding="utf-8")
    restamp(folder)
    message = only_error(check_folder(folder), "tokenizer").message
    assert message.startswith("the tokenizer does not load or run in onnxruntime-genai")


def test_corrupted_tokenizer_without_session(copy_of):
    """A non-CPU folder: only tokenizers loads the tokenizer, and the report says the session was skipped."""
    folder = copy_of()
    edit_json(folder / "genai_config.json", lambda c: c["model"]["decoder"]["session_options"].__setitem__(
        "provider_options", [{"cuda": {"enable_cuda_graph": "0"}}]))
    edit_json(folder / "inference_model.json", lambda i: i.__setitem__("Name", "tiny-int4-cuda-gpu"))
    restamp(folder)
    report = check_folder(folder)
    assert report.ok and "session" not in report.checked and "tokenizer" in report.checked
    assert [f.check for f in report.warnings] == ["session"]
    assert "configures cuda" in report.warnings[0].message
    (folder / "tokenizer.json").write_text("{not json", encoding="utf-8")
    restamp(folder)
    assert "tokenizer.json does not load or run in tokenizers" in only_error(check_folder(folder), "tokenizer").message


def test_prompt_template_disagrees(copy_of):
    folder = copy_of()
    edit_json(folder / "inference_model.json", lambda i: i["PromptTemplate"].__setitem__(
        "user", "<|im_start|>user {Content}<|im_end|>\n"))
    restamp(folder)
    report = check_folder(folder)
    assert only_error(report, "template").message.startswith(
        "PromptTemplate disagrees with the chat template: for system + user + assistant + user")


def test_prompt_template_parts(copy_of):
    folder = copy_of()

    def change(info):
        del info["PromptTemplate"]["assistant"]
        info["PromptTemplate"]["prompt"] = "{Content}{Content}"
    edit_json(folder / "inference_model.json", change)
    restamp(folder)
    messages = [f.message for f in check_folder(folder).findings]
    assert len(messages) == 2
    assert messages[0].startswith("inference_model.json: PromptTemplate.assistant is missing")
    assert messages[1].startswith("inference_model.json: PromptTemplate.prompt holds {Content} 2 times, not once")


def test_no_chat_template_warns(copy_of):
    folder = copy_of()
    (folder / "chat_template.jinja").unlink()
    edit_json(folder / "tokenizer_config.json", lambda c: c.pop("chat_template", None))
    restamp(folder)
    report = check_folder(folder)
    assert report.ok
    assert [f.check for f in report.warnings] == ["template"]
    assert report.warnings[0].message.startswith("the folder has no chat template")


def test_name_suffix_disagrees_with_provider(copy_of):
    folder = copy_of()
    edit_json(folder / "inference_model.json", lambda i: i.__setitem__("Name", "tiny-int4-cuda-gpu:2"))
    restamp(folder)
    assert only_error(check_folder(folder), "name-suffix").message == (
        "Name 'tiny-int4-cuda-gpu:2' ends in -cuda-gpu, but genai_config.json configures the cpu execution provider, "
        "which needs -generic-cpu: rename it to 'tiny-int4-generic-cpu' in inference_model.json")


def test_name_without_suffix_warns(copy_of):
    folder = copy_of()
    edit_json(folder / "inference_model.json", lambda i: i.__setitem__("Name", "my-model:1"))
    restamp(folder)
    report = check_folder(folder)
    assert report.ok and [f.check for f in report.warnings] == ["name-suffix"]
    assert "rename it to 'my-model-generic-cpu'" in report.warnings[0].message


def test_missing_name(copy_of):
    folder = copy_of()
    edit_json(folder / "inference_model.json", lambda i: i.pop("Name"))
    restamp(folder)
    report = check_folder(folder)
    assert only_error(report, "files").message.startswith('inference_model.json has no string "Name"')
    assert "name-suffix" not in report.checked


def test_every_problem_in_one_run(copy_of):
    """Without restamping, each change is also a hash mismatch: all of it is reported at once."""
    folder = copy_of()
    edit_json(folder / "genai_config.json", lambda c: c["search"].__setitem__("foo", True))
    edit_json(folder / "inference_model.json", lambda i: i.__setitem__("Name", "x-qnn-npu"))
    report = check_folder(folder)
    assert sorted(errors(report)) == ["genai-config-keys", "hashes", "hashes", "name-suffix"]


def test_model_the_runtime_cannot_load(copy_of):
    """What only ONNX Runtime 1.26.0 refuses (an attribute newer than it) is caught by loading the
    model in the runtime's own Python."""
    import onnx
    import onnx.helper

    python = _foundry_python()
    if python is None:
        pytest.skip("needs Foundry Local's runtime: make foundry-venv (or set PIPELINE_FOUNDRY_PYTHON)")
    folder = copy_of()
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for node in model.graph.node:
        if node.op_type == "GroupQueryAttention":
            node.attribute.append(onnx.helper.make_attribute("sliding_window_cache", 0))
    onnx.save(model, str(folder / "model.onnx"))
    restamp(folder)
    message = only_error(check_folder(folder, runtime_python=python), "session").message
    assert message.startswith("the model does not load in ONNX Runtime GenAI 0.14.1 (Foundry Local's runtime): ")
    assert "Unrecognized attribute: sliding_window_cache" in message


def test_runtime_python_with_other_versions_is_not_trusted(built):
    import sys

    report = check_folder(built["int4"], runtime_python=sys.executable)  # onnxruntime-genai 0.18 here
    assert report.ok and [f.check for f in report.warnings] == ["session"]
    assert "so the model was not loaded there" in report.warnings[0].message
    report = check_folder(built["int4"], runtime_python="/nonexistent/python")
    assert report.ok and "could not load the model with /nonexistent/python" in report.warnings[0].message


def test_check_is_fast(built):
    import time

    started = time.monotonic()
    check_folder(built["fp32"])
    assert time.monotonic() - started < 10


# -- the key tree agrees with the runtime it describes ----------------------------------------------

def _foundry_python() -> str | None:
    configured = os.environ.get("PIPELINE_FOUNDRY_PYTHON")
    if configured:
        return configured
    local = REPO / ".venv-foundry" / "bin" / "python"
    return str(local) if local.is_file() else None


_SAMPLE = {"string": "x", "number": 1, "bool": True, "any": 1}
_WRONG = {"string": 1, "number": "1", "bool": 1}
# Values the parser itself interprets (anything else fails for a reason other than the key).
_SPECIAL = {"graph_optimization_level": "ORT_ENABLE_ALL", "hardware_device_type": "cpu"}


def _sample(section: dict, defs: dict, path: tuple, alternate: bool, cases: list, into: dict | None = None) -> dict:
    """A document holding every key `section` knows (recursively); appends (path, document-maker,
    should_parse) cases for unknown keys and wrong types along the way."""
    while "$ref" in section:
        section = defs[section["$ref"]]
    doc = {} if into is None else into
    kinds = ("arrays", "objects", "values") if alternate else ("values", "objects", "arrays")
    for kind in kinds:
        for key, spec in section.get(kind, {}).items():
            if key in doc:
                continue
            if path == ("engine", "static_batching"):
                continue  # 0.14.1 writes through an unset optional here: not something to feed it
            if kind == "values":
                doc[key] = _SPECIAL.get(key, _SAMPLE[spec])
                if spec in _WRONG:
                    cases.append((path + (key,), _WRONG[spec], False))
            elif kind == "objects":
                doc[key] = _sample(spec, defs, path + (key,), alternate, cases)
            else:
                doc[key] = [_sample_element(spec, defs, path + (key,), alternate, cases)]
    for kind, value in (("value", "x"), ("object", {}), ("array", [])):
        if f"any_{kind}" not in section:
            cases.append((path + (f"zz_unknown_{kind}",), value, False))
        elif kind == "object" and f"x_{kind}" not in doc:
            doc["x_object"] = _sample(section["any_object"], defs, path + ("x_object",), alternate, cases)
        elif kind == "value" and "x_value" not in doc:
            doc["x_value"] = _SAMPLE[section["any_value"]]
    return doc


def _sample_element(spec: dict, defs: dict, path: tuple, alternate: bool, cases: list):
    while "$ref" in spec:
        spec = defs[spec["$ref"]]
    if "any_object" in spec:
        return _sample(spec["any_object"], defs, path + (0,), alternate, cases)
    return _SAMPLE[spec["any_value"]]


def _set(doc: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return doc


def test_key_tree_matches_onnxruntime_genai_0_14_1(tmp_path):
    """Every key the tree knows parses in the real 0.14.1, and every key it does not know (and every
    wrong type) is refused there: the data file describes that runtime in both directions."""
    python = _foundry_python()
    if python is None:
        pytest.skip("needs Foundry Local's runtime: make foundry-venv (or set PIPELINE_FOUNDRY_PYTHON)")
    grammar = SPEC["genai_config"]
    cases: list = []
    documents = {}
    for alternate in (False, True):
        doc = _sample(grammar["root"], grammar["definitions"], (), alternate, cases if not alternate else [])
        doc["model"]["context_length"] = 16
        documents[f"all-keys-{int(alternate)}"] = (doc, True)
    base = documents["all-keys-0"][0]
    for i, (path, value, should_parse) in enumerate(cases):
        documents[f"case-{i}"] = (_set(base, path, value), should_parse)
    for name, (doc, _) in documents.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "genai_config.json").write_text(json.dumps(doc), encoding="utf-8")
    script = ("import json, sys, onnxruntime_genai as og\n"
              "out = {}\n"
              "for d in sys.argv[1:]:\n"
              "    try:\n        og.Config(d); out[d] = None\n"
              "    except Exception as e:\n        out[d] = str(e)\n"
              "print(json.dumps(out))\n")
    names = sorted(documents)
    r = subprocess.run([python, "-c", script, *(str(tmp_path / n) for n in names)], check=False,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout.strip().splitlines()[-1])
    wrong = []
    for name in names:
        doc, should_parse = documents[name]
        error = results[str(tmp_path / name)]
        if should_parse != (error is None):
            path = cases[int(name.split("-")[1])][0] if name.startswith("case-") else name
            wrong.append(f"{path}: {'refused: ' + error if error else 'accepted, but the tree says it is unknown'}")
    assert len(cases) > 100
    assert wrong == []
