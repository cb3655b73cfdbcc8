"""Make an ONNX Runtime GenAI folder Foundry Local-ready: inference_model.json with a Name and a
PromptTemplate that agrees with the model's own chat template, and the chat template itself."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PackageError
from pipeline.packaging.templates import derive_prompt_template, load_tokenizer_template

# Foundry Local picks the execution provider from the name's suffix.
EP_SUFFIX = {"cpu": "generic-cpu", "cuda": "cuda-gpu", "dml": "generic-gpu", "webgpu": "generic-gpu"}
TEMPLATE_KEYS = ("system", "user", "assistant", "prompt")


@dataclass(frozen=True)
class PromptPlan:
    """The PromptTemplate decided before any conversion, and where it came from."""

    template: dict[str, str]
    origin: str  # "chat_template" | "recipe"
    exact: bool
    notes: tuple[str, ...]
    chat_template: str | None


def default_name(source: str, precision: str, execution_provider: str) -> str:
    """Foundry's convention `<model>-<precision>-<device suffix>`, e.g. qwen2.5-0.5b-instruct-int4-generic-cpu."""
    base = Path(source.rstrip("/\\")).name if "/" in source or "\\" in source else source
    base = re.sub(r"[^a-z0-9._-]+", "-", base.lower()).strip("-._") or "model"
    return f"{base}-{precision}-{EP_SUFFIX[execution_provider]}"


def plan_prompt(model_dir: Path, prompt_template: str | dict) -> PromptPlan:
    """Decide the PromptTemplate from the recipe and the source model's tokenizer.
    Fails (PackageError) when `auto` is asked for and the tokenizer has no chat template."""
    chat_template, special_tokens = load_tokenizer_template(model_dir)
    if isinstance(prompt_template, dict):
        template = {k: prompt_template[k] for k in TEMPLATE_KEYS if k in prompt_template}
        return PromptPlan(template, "recipe", True, (), chat_template)
    if not chat_template:
        raise PackageError(
            f"{model_dir}: the tokenizer has no chat template, so package.foundry_local.prompt_template: auto "
            "cannot derive one; give the template in the recipe (system, user, assistant, prompt, each with {Content})")
    derived = derive_prompt_template(chat_template, special_tokens)
    return PromptPlan(dict(derived.template), "chat_template", derived.exact, tuple(derived.notes), chat_template)


def package(folder: Path, model_dir: Path, name: str, plan: PromptPlan) -> dict:
    """Write inference_model.json (and chat_template.jinja when the builder left it out) into
    `folder`. Returns the inference_model.json content."""
    if not (folder / "genai_config.json").is_file():
        raise PackageError(f"{folder}: no genai_config.json; the model-builder pass must run before packaging")
    if plan.chat_template and not (folder / "chat_template.jinja").exists():
        source_file = model_dir / "chat_template.jinja"
        if source_file.is_file():
            shutil.copyfile(source_file, folder / "chat_template.jinja")
        else:
            (folder / "chat_template.jinja").write_text(plan.chat_template, encoding="utf-8")
    _tidy_tokenizer_config(folder / "tokenizer_config.json", plan.chat_template)
    info = {"Name": name, "PromptTemplate": plan.template}
    (folder / "inference_model.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return info


# Loader state transformers 5 saves into tokenizer_config.json; in a shipped folder it would make
# every consumer load offline-only.
_LOADER_STATE_KEYS = ("is_local", "local_files_only")


def _tidy_tokenizer_config(path: Path, chat_template: str | None) -> None:
    """Keep the chat template in tokenizer_config.json too (older loaders read it only there) and
    drop the builder's loader state."""
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    for key in _LOADER_STATE_KEYS:
        config.pop(key, None)
    if chat_template and not config.get("chat_template"):
        config["chat_template"] = chat_template
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
