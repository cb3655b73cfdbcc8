"""Load a built folder and generate greedily, the way Foundry Local's runtime would.

Run by path with the Python of an environment pinned to Foundry Local's runtime
(ONNX Runtime 1.26.0 + ONNX Runtime GenAI 0.14.1; `make foundry-venv`), e.g.
    .venv-foundry/bin/python pipeline/foundry_smoke.py artifacts/tiny-qwen2-int4 "Hello"
It imports nothing from this project (that environment has only the runtime) and prints one JSON
object: runtime versions, the prompt it built from inference_model.json, and the generated tokens.
"""

import json
import sys
from pathlib import Path


def main() -> int:
    if len(sys.argv) < 3:
        print("usage: foundry_smoke.py FOLDER PROMPT [MAX_NEW_TOKENS]", file=sys.stderr)
        return 2
    folder, prompt = Path(sys.argv[1]), sys.argv[2]
    max_new = int(sys.argv[3]) if len(sys.argv) > 3 else 16

    import onnxruntime
    import onnxruntime_genai as og

    info = json.loads((folder / "inference_model.json").read_text(encoding="utf-8"))
    template = info["PromptTemplate"]["prompt"]
    text = template.replace("{Content}", prompt)

    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    ids = [int(i) for i in tokenizer.encode(text)]
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + max_new, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    # What the runtime's own chat-template support makes of a system + user turn.
    messages = json.dumps([{"role": "system", "content": "SYS"}, {"role": "user", "content": prompt}])
    try:
        chat_render = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    except Exception as e:  # older runtimes lack some template features; report, don't fail here
        chat_render = f"error: {e}"
    print(json.dumps({
        "onnxruntime": onnxruntime.__version__, "onnxruntime_genai": og.__version__,
        "name": info["Name"], "prompt": text, "prompt_ids": ids, "tokens": tokens,
        "text": tokenizer.decode(tokens), "chat_template_render": chat_render,
        "prompt_template_render": info["PromptTemplate"]["system"].replace("{Content}", "SYS") + text,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
