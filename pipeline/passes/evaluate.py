"""`evaluate`: measure the model the previous pass built (perplexity and next-token parity against
the source model, greedy agreement, speed, size) and add metrics.json and report.md to it.

The model's files are hard-linked into the output, not copied: the pass adds two small files.
Speed figures are measured once per cache entry; `pipeline build --force` measures again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline.cache import link_tree
from pipeline.passes import Artifact, Context, register

METRICS = "metrics.json"
REPORT = "report.md"


# Without `text:` the pass scores pipeline/data/heldout.txt; its content is part of the key.
_DEFAULT_TEXT = Path(__file__).resolve().parent.parent / "data" / "heldout.txt"


@register("evaluate", version="1", consumes="onnx-genai", produces="onnx-genai", file_params=("text",),
          file_defaults={"text": _DEFAULT_TEXT})
def evaluate_pass(artifact: Artifact, config: dict, ctx: Context) -> Artifact:
    from pipeline.evaluate import DEFAULT_PROMPTS, evaluate
    from pipeline.report import write_report

    out = ctx.workdir / "out"
    link_tree(artifact.path, out)
    for stale in (METRICS, REPORT):  # a second evaluate pass replaces the first one's results
        (out / stale).unlink(missing_ok=True)
    # Packaging writes the real inference_model.json later; the evaluation prompts need its
    # PromptTemplate now.
    staged_info = out / "inference_model.json"
    staged_info.unlink(missing_ok=True)
    staged_info.write_text(json.dumps({"Name": "evaluation", "PromptTemplate": ctx.prompt_template}), encoding="utf-8")
    text = Path(config["text"]).read_text(encoding="utf-8") if config.get("text") else None
    metrics = evaluate(out, ctx.source, text=text,
                       prompts=config.get("prompts") or DEFAULT_PROMPTS,
                       window=config.get("window", 256), stride=config.get("stride", 128),
                       max_new_tokens=config.get("max_new_tokens", 16), speed=config.get("speed", True),
                       log=ctx.log)
    staged_info.unlink()
    (out / METRICS).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    report_dir = ctx.workdir / "report"
    write_report([metrics], report_dir, title="Evaluation")
    shutil.copyfile(report_dir / REPORT, out / REPORT)
    ppl = metrics.get("perplexity", {})
    speed = metrics.get("speed", {})
    ctx.log(f"perplexity {ppl.get('onnx', float('nan')):.3f} (source {ppl.get('source') or float('nan'):.3f}), "
            f"decode {speed.get('decode_tokens_per_s') or float('nan'):.1f} tokens/s")
    return Artifact(out, "onnx-genai", {"metrics": metrics})

