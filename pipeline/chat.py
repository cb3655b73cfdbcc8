"""`pipeline chat`: the smoke test a user would otherwise do with `foundry model run`: load the
folder with onnxruntime-genai, build the prompt from its PromptTemplate, stream the answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from pipeline.errors import OutputError


def read_model_folder(folder: Path) -> tuple[dict, dict]:
    """genai_config.json and inference_model.json of a built folder, or a clear error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OutputError(f"{folder} is not a folder; pass a built model folder such as artifacts/<name>")
    missing = [n for n in ("genai_config.json", "inference_model.json") if not (folder / n).is_file()]
    if missing:
        raise OutputError(f"{folder} is not a Foundry Local model folder (missing {', '.join(missing)}); "
                          "build one with `pipeline build RECIPE`")
    try:
        genai = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
        info = json.loads((folder / "inference_model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise OutputError(f"{folder}: cannot read its config: {e}") from None
    return genai, info


def build_prompt(info: dict, prompt: str, system: str | None = None) -> str:
    """The text Foundry Local would feed the model for one (optional system +) user turn."""
    from pipeline.packaging.templates import fill

    template = info.get("PromptTemplate") or {}
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return fill(template, messages)


def chat(folder: Path, prompt: str, *, system: str | None = None, max_tokens: int = 128,
         greedy: bool = False) -> Iterator[str]:
    """Yield the answer piece by piece as the model generates it."""
    genai, info = read_model_folder(folder)
    text = build_prompt(info, prompt, system)

    import onnxruntime_genai as og

    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    ids = tokenizer.encode(text)
    context = int(genai.get("search", {}).get("max_length") or genai["model"]["context_length"])
    if len(ids) >= context:
        raise OutputError(f"the prompt is {len(ids)} tokens; this model's context is {context}; shorten it")
    params = og.GeneratorParams(model)
    options = {"max_length": min(context, len(ids) + max_tokens)}
    if greedy:
        options["do_sample"] = False
    params.set_search_options(**options)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    stream = tokenizer.create_stream()
    while not generator.is_done():
        generator.generate_next_token()
        yield stream.decode(generator.get_next_tokens()[0])
