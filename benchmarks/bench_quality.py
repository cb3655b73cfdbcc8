"""Quality benchmark: what each precision and int4 setting costs the trained model (issue 5).

    .venv/bin/python benchmarks/bench_quality.py            # the whole sweep: about 3 min on 2 cores, 1 min once built
    .venv/bin/python benchmarks/bench_quality.py --quick    # fp32, int8, int4 default, one variant: a smoke check

Builds models/tiny-qwen2-trained (the model of recipes/trained-qwen2-*.yaml) once per setting
with our own build (pipeline.runner.build) and evaluates each folder with
pipeline.evaluate.evaluate on the held-out text: perplexity of the ONNX model and of the source
model (transformers, float32) on the same token ids, next-token top-1 agreement, KL, greedy
agreement, and the size of the ONNX files. Settings: fp32, int8, int4 with the shipped defaults
(pipeline.recipe.INT4_DEFAULTS, accuracy_level left to the builder: 4 on CPU), then int4 with
one setting changed at a time: block_size, accuracy_level, algorithm, symmetric, and int8 for
the most sensitive MatMuls (the builder's matmul_mixed_precision). A setting that fails to
build or to run is recorded as failed, with its reason.

Builds go through a private pass cache and output folders under benchmarks/.work/quality/, so
a rerun rebuilds nothing that has not changed; evaluation always runs.

Checks issue 5's target (int4 with default settings within +2% perplexity of the fp32 build)
and writes benchmarks/results/quality.json (machine, tools, commit, every setting's numbers),
quality.md (the table) and quality.png (perplexity against size). Exits 0 when the target is
missed (prints TARGET MISSED on stderr) and 1 only when the measurement cannot be made (the fp32
or the default int4 setting fails).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench_build import RESULTS, ROOT, run_header, write_results

RECIPE = ROOT / "recipes" / "trained-qwen2-int4.yaml"  # model, target and package of every build
WORK = ROOT / "benchmarks" / ".work" / "quality"
TARGET_PCT = 2.0  # issue 5: int4 with default settings within +2% perplexity of fp32
DEFAULT = "int4 default"

# (name, the model-builder pass's fields). Each int4 variant changes one thing from DEFAULT.
SETTINGS = [
    ("fp32", {"precision": "fp32"}),
    ("int8", {"precision": "int8"}),
    (DEFAULT, {"precision": "int4"}),
    *((f"block_size {b}", {"precision": "int4", "block_size": b}) for b in (16, 64, 128, 256)),
    *((f"accuracy_level {a}", {"precision": "int4", "accuracy_level": a}) for a in (1, 2, 3, 4)),
    ("algorithm rtn", {"precision": "int4", "algorithm": "rtn"}),
    ("algorithm k_quant", {"precision": "int4", "algorithm": "k_quant"}),
    ("symmetric false", {"precision": "int4", "symmetric": False}),
    # The builder's legacy aliases (rtn_last, k_quant_last, k_quant_mixed) are refused by the
    # recipe's `algorithm` and by extra_options.algo_config; their meaning is algorithm +
    # matmul_mixed_precision, which extra_options passes through.
    ("algorithm k_quant_mixed (alias)", {"precision": "int4", "algorithm": "k_quant_mixed"}),
    ("lm_head int8", {"precision": "int4", "extra_options": {"matmul_mixed_precision": "last_matmul:int8"}}),
    ("k_quant, lm_head int8 (k_quant_last)", {"precision": "int4", "algorithm": "k_quant",
                                              "extra_options": {"matmul_mixed_precision": "last_matmul:int8"}}),
    ("k_quant, mixed int8 (k_quant_mixed)", {"precision": "int4", "algorithm": "k_quant",
                                             "extra_options": {"matmul_mixed_precision": "last_matmul:int8,mixed_layers:int8"}}),
]
QUICK = ("fp32", "int8", DEFAULT, "block_size 128")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def recipe_for(name: str, fields: dict):
    """The trained-model recipe with one model-builder pass of `fields` and nothing else (no
    evaluate pass, no checks): the benchmark evaluates the folder itself."""
    from pipeline.recipe import load_recipe, recipe_from_dict

    def present(d: dict) -> dict:  # validated data has None for unset fields; a recipe omits them
        return {k: present(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}

    data = present(load_recipe(RECIPE).data)
    data.pop("checks", None)
    data["name"] = "quality-" + "-".join("".join(c for c in w if c.isalnum() or c == "_") for w in name.split())
    data["passes"] = [{"type": "model-builder", **fields}]
    return recipe_from_dict(data)


def measure(name: str, fields: dict, *, verbose: bool) -> dict:
    """Build and evaluate one setting. Never raises for the setting's own failure: the row says
    at which stage it failed and why, in one line."""
    from pipeline.cache import Cache
    from pipeline.evaluate import evaluate
    from pipeline.runner import build

    row = {"name": name, "fields": fields, "default": name == DEFAULT, "status": "failed"}
    stage = "recipe"
    try:
        recipe = recipe_for(name, fields)
        stage, t = "build", time.monotonic()
        result = build(recipe, WORK / "builds" / recipe.name, cache=Cache(WORK / "cache"),
                       log=(lambda m: log("      " + m)) if verbose else (lambda m: None))
        step = result.info["passes"][0]
        row["build"] = {"seconds": round(time.monotonic() - t, 2), "ran": bool(result.ran),
                        "params": step["params"], "command": step["command"], "folder": str(result.folder)}
        stage, t = "evaluate", time.monotonic()
        metrics = evaluate(result.folder, Path(recipe.model["source"]), speed=False)
        row["eval_seconds"] = round(time.monotonic() - t, 2)
    except Exception as e:  # noqa: BLE001 - any failure of one setting is that setting's result
        row.update(stage=stage, reason=" ".join(str(e).split())[:400] or type(e).__name__)
        return row
    ppl, parity = metrics["perplexity"], metrics["parity"]
    row.update(status="ok", size_bytes=metrics["model"]["size_bytes"], ppl_onnx=ppl["onnx"],
               ppl_source=ppl["source"], vs_source_pct=ppl["increase_pct"], top1=parity["top1_agreement"],
               kl=parity["kl_divergence"], greedy=parity["greedy_agreement"], exact_match=parity["exact_match"],
               metrics={k: metrics[k] for k in ("model", "perplexity", "parity", "skipped")})
    return row


def pct(x: float | None) -> str:
    return "–" if x is None else f"{x if round(x, 2) else 0.0:+.2f}%"  # "+0.00%", never "-0.00%"


def settings_of(row: dict) -> str:
    """What was built, in short: the resolved pass parameters, builder defaults named."""
    p = (row.get("build") or {}).get("params") or {"accuracy_level": None, **row["fields"]}
    if p["precision"] != "int4":
        return p["precision"]
    acc = p.get("accuracy_level")
    parts = [f"block {p.get('block_size', 32)}", "acc " + (str(acc) if acc is not None else "4 (builder)"),
             "sym" if p.get("symmetric", True) else "asym", p.get("algorithm", "default")]
    mixed = (p.get("extra_options") or {}).get("matmul_mixed_precision")
    return ", ".join(parts + ([f"mixed {mixed}"] if mixed else []))


def verdict(rows: list[dict]) -> dict:
    """Issue 5's target, and the best int4 settings by perplexity (then size): overall, and
    among those that keep every MatMul in int4."""
    by_name = {r["name"]: r for r in rows}
    fp32, default = by_name.get("fp32"), by_name.get(DEFAULT)
    if not (fp32 and default and fp32["status"] == default["status"] == "ok"):
        return {"measured": False, "line": "int4 default vs fp32: not measured (see the failed rows)"}
    delta = default["vs_fp32_pct"]
    ok = [r for r in rows if r["status"] == "ok" and r["fields"]["precision"] == "int4"]
    best = min(ok, key=lambda r: (r["ppl_onnx"], r["size_bytes"]))
    pure = min((r for r in ok if not r["fields"].get("extra_options")), key=lambda r: (r["ppl_onnx"], r["size_bytes"]))

    def show(r: dict) -> str:
        return (f"{r['name']} ({settings_of(r)}): {pct(r['vs_fp32_pct'])} vs fp32, "
                f"{r['size_bytes'] / 1024:,.0f} KiB ({r['size_bytes'] / default['size_bytes'] - 1:+.0%} vs the default)")

    return {"measured": True, "default_vs_fp32_pct": delta, "target_pct": TARGET_PCT, "pass": delta <= TARGET_PCT,
            "line": (f"int4 default: {delta:+.2f}% perplexity vs fp32 (target <= +{TARGET_PCT:g}%): "
                     f"{'PASS' if delta <= TARGET_PCT else 'FAIL'}"),
            "best_int4": best["name"], "best_all_int4": pure["name"],
            "best_lines": [f"Best int4 setting by perplexity: {show(best)}.",
                           f"Best with every MatMul in int4: {show(pure)}."]}


def notes(rows: list[dict]) -> list[str]:
    """What a reader of the table should know, from the numbers themselves."""
    out, ok = [], [r for r in rows if r["status"] == "ok"]
    same: dict[tuple, list[str]] = {}
    for r in ok:
        same.setdefault((r["ppl_onnx"], r["top1"], r["kl"], r["size_bytes"]), []).append(r["name"])
    out += [f"Identical numbers (the same model or the same computation): {', '.join(names)}."
            for names in same.values() if len(names) > 1]
    hidden = json.loads((ROOT / "models" / "tiny-qwen2-trained" / "config.json").read_text())["hidden_size"]
    padded = sorted({r["build"]["params"]["block_size"] for r in ok if r["fields"]["precision"] == "int4"
                     and r["build"]["params"]["block_size"] > hidden})
    if padded:
        out.append(f"block_size {', '.join(map(str, padded))} exceeds hidden_size {hidden}, the input size of most "
                   "MatMuls: each of their weight columns is padded to one block, hence the larger files.")
    out.append("The numbers are deterministic (a rerun gives the same), but come from one held-out text: read "
               "differences of a few tenths of a percent as indicative. Greedy agreement (4 prompts x 16 tokens of "
               "a small, repetition-prone model) swings with one early divergence: rank by perplexity, KL, top-1.")
    return out


def render(info: dict) -> str:
    m, rows, v = info["machine"], info["results"], info["verdict"]
    sources = {round(r["ppl_source"], 6) for r in rows if r["status"] == "ok"}
    first = next((r for r in rows if r["status"] == "ok"), None)
    ppl = first["metrics"]["perplexity"] if first else {}
    lines = [
        (f"Measured {info['date'][:10]} on {m['cpu_model']}, {m['cpus_usable']} cores, Python {m['python']}, "
         f"onnxruntime-genai {info['tools'].get('onnxruntime-genai')}, onnxruntime {info['tools'].get('onnxruntime')}, "
         f"transformers {info['tools'].get('transformers')}, torch {info['tools'].get('torch')} "
         f"(commit {info['git']['commit'][:10]}{', uncommitted changes' if info['git']['dirty'] else ''})."),
        "",
        (f"Model: models/tiny-qwen2-trained, built for CPU. Perplexity over {ppl.get('text')} "
         f"({ppl.get('tokens_scored', 0):,} tokens scored, window {ppl.get('window')}, stride {ppl.get('stride')}); "
         "the source is the same model in transformers (float32) on the same token ids"
         + ("" if len(sources) <= 1 else " (it was NOT the same in every run: compare with care)") + ". "
         "vs fp32: against the fp32 ONNX build. top-1: next-token argmax equal to the source's; "
         "KL: mean KL(source ‖ onnx) in nats; greedy: mean share of 16 greedy tokens before the first "
         "divergence over 4 chat prompts. Size: the folder's ONNX files. **Bold**: the shipped default."),
        "",
        "| setting | built as | size KiB | ppl ONNX | ppl transformers | vs transformers | vs fp32 | top-1 | KL | greedy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = f"**{r['name']}**" if r["default"] else r["name"]
        if r["status"] != "ok":
            lines.append(f"| {name} | {settings_of(r)} | failed ({r['stage']}): {r['reason'].replace('|', '/')} "
                         "| | | | | | | |")
            continue
        lines.append(f"| {name} | {settings_of(r)} | {r['size_bytes'] / 1024:,.0f} | {r['ppl_onnx']:.3f} "
                     f"| {r['ppl_source']:.3f} | {pct(r['vs_source_pct'])} | {pct(r['vs_fp32_pct'])} "
                     f"| {r['top1']:.3f} | {r['kl']:.2g} | {r['greedy']:.3f} |")
    lines += ["", *(f"- {n}" for n in notes(rows)), "", f"**{v['line']}.**", *(x for b in v.get("best_lines", []) for x in ("", b))]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """Perplexity against size, one point per quantized setting (identical ones merged), each
    labelled in a column beside the axes; the fp32 build and the target as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    fp32 = next((r for r in ok if r["name"] == "fp32"), None)
    points: dict[tuple, list[str]] = {}
    for r in ok:
        if r is not fp32:
            points.setdefault((r["size_bytes"] / 1024, r["ppl_onnx"]), []).append(r["name"])
    fig, ax = plt.subplots(figsize=(12, 6.5), dpi=110)
    fig.subplots_adjust(left=0.08, right=0.64)
    ax.plot([x for x, _ in points], [y for _, y in points], "o", markersize=6)
    for r in ok:
        if r["default"]:
            ax.plot(r["size_bytes"] / 1024, r["ppl_onnx"], "*", markersize=14, color="tab:orange",
                    label="the shipped int4 default")
    if fp32:
        ref = fp32["ppl_onnx"]
        ax.axhline(ref, color="grey", linestyle="--", linewidth=1,
                   label=f"fp32 ONNX: {ref:.3f} ({fp32['size_bytes'] / 1024:,.0f} KiB)")
        ax.axhline(ref * (1 + TARGET_PCT / 100), color="red", linestyle=":", linewidth=1,
                   label=f"target: fp32 +{TARGET_PCT:g}%")
    ax.legend(loc="upper left", fontsize=8)
    ax.margins(x=0.08, y=0.08)
    low, high = ax.get_ylim()
    # Labels beside the axes at their points' heights, pushed apart just enough not to overlap.
    ordered = sorted(points.items(), key=lambda p: -p[0][1])
    gap = min(0.05, 1 / max(len(ordered), 1))
    at = []
    for (_, y), _ in ordered:
        at.append(min((y - low) / (high - low), (at[-1] - gap) if at else 1 - gap / 2))
    for i in reversed(range(len(at))):
        at[i] = max(at[i], gap / 2 + (len(at) - 1 - i) * gap)
    for ((x, y), names), height in zip(ordered, at):
        ax.annotate(" = ".join(names), (x, y), xytext=(1.03, height), textcoords="axes fraction", va="center",
                    fontsize=8, arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.5})
    ax.set_ylim(low, high)
    ax.set_xlabel("model size (KiB, ONNX files)")
    ax.set_ylabel("held-out perplexity (ONNX, lower is better)")
    ax.grid(True, alpha=0.3)
    ax.set_title("tiny-qwen2-trained on CPU: quality against size")
    fig.savefig(path, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)} (a smoke check)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where quality.json, .md and .png go")
    parser.add_argument("-v", "--verbose", action="store_true", help="show each build's log")
    args = parser.parse_args(argv)

    settings = [(n, f) for n, f in SETTINGS if n in QUICK or not args.quick]
    started, t0 = datetime.now(timezone.utc), time.monotonic()
    log(f"bench quality: {len(settings)} settings of {RECIPE.relative_to(ROOT)}'s model; work in "
        f"{WORK.relative_to(ROOT)}")
    rows = []
    for i, (name, fields) in enumerate(settings, 1):
        row = measure(name, fields, verbose=args.verbose)
        rows.append(row)
        if row["status"] != "ok":
            log(f"[{i:2}/{len(settings)}] {name:<36} FAILED at {row['stage']}: {row['reason']}")
            continue
        b = row["build"]
        log(f"[{i:2}/{len(settings)}] {name:<36} ppl {row['ppl_onnx']:8.3f} ({pct(row['vs_source_pct']):>7} vs "
            f"transformers), top-1 {row['top1']:.3f}, {row['size_bytes'] / 1024:6,.0f} KiB  "
            f"[build {b['seconds']:.1f}s {'ran' if b['ran'] else 'cached'}, eval {row['eval_seconds']:.1f}s]")
    fp32 = next((r["ppl_onnx"] for r in rows if r["name"] == "fp32" and r["status"] == "ok"), None)
    for r in rows:
        if r["status"] == "ok":
            r["vs_fp32_pct"] = (r["ppl_onnx"] / fp32 - 1) * 100 if fp32 else None

    info = {
        **run_header(started, t0),
        "config": {"quick": args.quick, "recipe": str(RECIPE.relative_to(ROOT)), "target_pct": TARGET_PCT,
                   "workdir": str(WORK.relative_to(ROOT)), "evaluate": "pipeline.evaluate.evaluate defaults, speed off"},
        "verdict": verdict(rows),
        "results": rows,
    }
    write_results(args.results, "quality", "Quality benchmark",
                  ".venv/bin/python benchmarks/bench_quality.py" + (" --quick" if args.quick else ""), info,
                  render(info) + "\n![perplexity against size](quality.png)\n")
    plot(rows, args.results / "quality.png")
    log(f"wrote {args.results / 'quality.json'}, quality.md and quality.png ({info['bench_seconds']:.0f} s)")
    v = info["verdict"]
    if not v["measured"]:
        log(f"error: {v['line']}")
        return 1
    if not v["pass"]:
        log(f"TARGET MISSED: {v['line']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
