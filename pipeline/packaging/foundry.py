"""Make an ONNX Runtime GenAI folder Foundry Local-ready: inference_model.json with a Name and a
PromptTemplate that agrees with the model's own chat template, and the chat template itself."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PackageError
from pipeline.packaging.templates import (
    TEMPLATE_FAMILIES,
    TOKEN_RE,
    derive_prompt_template,
    family_chat_template,
    get_template_family,
    load_tokenizer_template,
)

# Foundry Local picks the execution provider from the name's suffix.
EP_SUFFIX = {"cpu": "generic-cpu", "cuda": "cuda-gpu", "dml": "generic-gpu", "webgpu": "generic-gpu"}
TEMPLATE_KEYS = ("system", "user", "assistant", "prompt")


@dataclass(frozen=True)
class PromptPlan:
    """The PromptTemplate decided before any conversion, and where it came from."""

    template: dict[str, str]
    origin: str  # "chat_template" | "template_family" | "recipe"
    exact: bool
    notes: tuple[str, ...]
    chat_template: str | None  # what the folder ships as chat_template.jinja


def default_name(source: str, precision: str, execution_provider: str) -> str:
    """Foundry's convention `<model>-<precision>-<device suffix>`, e.g. qwen2.5-0.5b-instruct-int4-generic-cpu."""
    base = Path(source.rstrip("/\\")).name if "/" in source or "\\" in source else source
    base = re.sub(r"[^a-z0-9._-]+", "-", base.lower()).strip("-._") or "model"
    return f"{base}-{precision}-{EP_SUFFIX[execution_provider]}"


def plan_prompt(model_dir: Path, prompt_template: str | dict, *, template_family: str | None = None) -> PromptPlan:
    """Decide the PromptTemplate from the recipe and the source model's tokenizer.

    `auto` derives it from the tokenizer's chat template. A tokenizer without one uses the real
    chat template of `template_family` (shipped in pipeline/data/chat_templates/; the folder then
    ships it as its chat template); when the tokenizer has one, it wins over the family, with a
    note if they differ. Fails (PackageError), before any conversion, when `auto` has neither,
    when the family's template writes special tokens the tokenizer lacks, or when both the four
    strings and a family are given.
    """
    chat_template, special_tokens = load_tokenizer_template(model_dir)
    if isinstance(prompt_template, dict):
        if template_family is not None:
            raise PackageError("give either package.foundry_local.prompt_template (the four strings) or "
                               "template_family, not both")
        template = {k: prompt_template[k] for k in TEMPLATE_KEYS if k in prompt_template}
        return PromptPlan(template, "recipe", True, (), chat_template)

    notes: list[str] = []
    origin = "chat_template"
    family = get_template_family(template_family) if template_family is not None else None
    if not chat_template:
        if family is None:
            raise PackageError(
                f"{model_dir}: the tokenizer has no chat template, so package.foundry_local.prompt_template: auto "
                "cannot derive one; name the model's chat format with package.foundry_local.template_family "
                f"({', '.join(TEMPLATE_FAMILIES)}) or give prompt_template (system, user, assistant, prompt, "
                "each with {Content})")
        chat_template, origin = family_chat_template(family.name), "template_family"
        notes.append(f"the tokenizer has no chat template; using the {family.name} family's, which is "
                     f"{family.model}'s own (the folder ships it as chat_template.jinja)")
    elif family is not None and chat_template != family_chat_template(family.name):
        same = (derive_prompt_template(chat_template, special_tokens).template
                == derive_prompt_template(family_chat_template(family.name), special_tokens).template)
        notes.append(f"the tokenizer's own chat template is used, not the {family.name} family's "
                     f"({family.model}'s) that package.foundry_local.template_family names; they differ"
                     + (", though both give the same PromptTemplate" if same else ", and so do their PromptTemplates"))
    derived = derive_prompt_template(chat_template, special_tokens)
    if origin == "template_family":
        _check_family_tokens(model_dir, family.name, derived.template)
    return PromptPlan(dict(derived.template), origin, derived.exact, tuple(notes) + derived.notes, chat_template)


def _check_family_tokens(model_dir: Path, family: str, template: dict[str, str]) -> None:
    """A family's template must only write special tokens the tokenizer has; otherwise the
    prompt would spell them out as plain text. Checked where tokenizer.json says."""
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        vocab = data.get("model", {}).get("vocab") or {}
        known = set(vocab) if isinstance(vocab, dict) else {v[0] for v in vocab if isinstance(v, list) and v}
        known |= {t.get("content") for t in data.get("added_tokens", []) if isinstance(t, dict)}
    except (ValueError, AttributeError, TypeError):
        return  # an unreadable tokenizer.json is the builder's to report
    used = sorted({m.group() for part in template.values() for m in TOKEN_RE.finditer(part)})
    missing = [t for t in used if t not in known]
    if missing:
        raise PackageError(
            f"{model_dir}: package.foundry_local.template_family {family!r} writes {', '.join(missing)}, which "
            f"this tokenizer does not have; name the family the model was trained with "
            f"({', '.join(TEMPLATE_FAMILIES)}) or give prompt_template")


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


# genai_config.json keys the 0.18 builder writes that Foundry Local's runtime (ONNX Runtime GenAI
# 0.14.1) refuses ("Unknown value"), and that can go without changing what the model computes
# there: the reasoning-token ids newer runtimes use to split <think> output.
_NEWER_MODEL_KEYS = ("bot_token_id", "eot_token_id", "bor_token_id", "eor_token_id")


def adapt_genai_config(folder: Path) -> list[str]:
    """Drop what Foundry Local's older runtime refuses but does not need; returns the JSON paths
    removed. Anything else it would refuse is left for `pipeline check` to report."""
    path = folder / "genai_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    model = config.get("model", {})
    removed = [f"model.{k}" for k in _NEWER_MODEL_KEYS if model.pop(k, None) is not None]
    window = model.get("decoder", {}).get("sliding_window")
    # cache_slack only sizes a windowed KV cache; with no windowed layer it is inert.
    if isinstance(window, dict) and window.get("layers") == [] and "cache_slack" in window:
        del window["cache_slack"]
        removed.append("model.decoder.sliding_window.cache_slack")
    if removed:
        path.write_text(json.dumps(config, indent=4) + "\n", encoding="utf-8")
    return removed


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
