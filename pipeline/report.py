"""A comparison of evaluated builds: report.md (one table row per build) and report.png
(quality and decode speed against model size, one labelled point per build).

    write_report([evaluate(a, src), evaluate(b, src)], Path("reports/qwen"))

Each result is a metrics dict from pipeline.evaluate.evaluate; a result may also carry
"checks": a list of CheckResult dicts (pipeline.evaluate.apply_checks(...)[i].to_dict()),
reported under the table. A metric a result lacks is shown as "–" and left out of the plot.
"""

from __future__ import annotations

from pathlib import Path

MB = 1024 * 1024
_DASH = "–"

# (header, metric path, format)
COLUMNS = (
    ("build", "model.name", "{}"),
    ("precision", "model.precision", "{}"),
    ("size MB", "model.size_bytes", "size"),
    ("ppl onnx", "perplexity.onnx", "{:.4g}"),
    ("ppl source", "perplexity.source", "{:.4g}"),
    ("+%", "perplexity.increase_pct", "{:+.2f}"),
    ("top-1", "parity.top1_agreement", "{:.3f}"),
    ("KL", "parity.kl_divergence", "{:.2g}"),
    ("greedy", "parity.greedy_agreement", "{:.3f}"),
    ("TTFT s", "speed.time_to_first_token_s", "{:.3g}"),
    ("prompt tok/s", "speed.prompt_tokens_per_s", "{:,.0f}"),
    ("decode tok/s", "speed.decode_tokens_per_s", "{:,.1f}"),
    ("peak RSS MB", "speed.peak_rss_mb", "{:,.0f}"),
)


def write_report(results: list[dict], out_dir: Path, title: str = "Model evaluation") -> list[Path]:
    """Write out_dir/report.md and out_dir/report.png; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, png = out_dir / "report.md", out_dir / "report.png"
    md.write_text(render_markdown(results, title, png.name), encoding="utf-8")
    plot(results, png, title)
    return [md, png]


def render_markdown(results: list[dict], title: str, image: str | None = "report.png") -> str:
    lines = [f"# {title}", ""]
    if not results:
        return "\n".join(lines + ["No builds were evaluated.", ""])
    lines += ["| " + " | ".join(h for h, _, _ in COLUMNS) + " |",
              "|" + "|".join("---" if i < 2 else "---:" for i in range(len(COLUMNS))) + "|"]
    for result in results:
        lines.append("| " + " | ".join(_cell(result, path, fmt) for _, path, fmt in COLUMNS) + " |")
    lines.append("")

    notes = _notes(results)
    if notes:
        lines += [f"- {n}" for n in notes] + [""]
    for result in results:
        name = _get(result, "model.name") or "?"
        skipped = result.get("skipped") or {}
        failed = [c for c in result.get("checks") or [] if not c.get("passed")]
        checks = result.get("checks") or []
        if checks:
            lines.append(f"**{name}**: {len(checks) - len(failed)}/{len(checks)} checks passed"
                         + ("" if failed else "."))
            lines += [f"- FAILED {c['message']}" for c in failed]
        if skipped:
            lines += [f"- {name}: not measured: `{k}`: {v}" for k, v in skipped.items()]
        if checks or skipped:
            lines.append("")
    if image:
        lines += [f"![quality and speed against size]({image})", ""]
    return "\n".join(lines)


def _notes(results: list[dict]) -> list[str]:
    """What the numbers mean and what they were measured on (from the first result that says)."""
    notes = []
    ppl = next((r["perplexity"] for r in results if "perplexity" in r), None)
    if ppl:
        texts = {r["perplexity"]["text_sha256"] for r in results if "perplexity" in r}
        same = "" if len(texts) == 1 else " (NOT the same text for every build: compare with care)"
        notes.append(f"Perplexity over {ppl['text']} (sha256 {ppl['text_sha256'][:12]}…), "
                     f"{ppl['tokens_scored']:,} tokens scored, window {ppl['window']}, stride {ppl['stride']}"
                     f"{same}. +% is the ONNX model's perplexity over the source model's (transformers, "
                     "float32) on the same token ids.")
    parity = next((r["parity"] for r in results if "parity" in r), None)
    if parity:
        notes.append("top-1: next-token argmax equal to the source's; KL: mean KL(source ‖ onnx) in nats; "
                     f"greedy: mean share of {parity['max_new_tokens']} greedy tokens before the first "
                     f"divergence, over {parity['prompts']} chat prompts.")
    speed = next((r["speed"] for r in results if "speed" in r), None)
    if speed:
        runs = speed.get("runs", speed["repeats"])
        notes.append(f"Speed: {speed['prompt_tokens']} prompt + {speed['new_tokens']} new tokens, KV cache "
                     f"max_length {speed['max_length']}, median of {runs} runs after a warm-up, in a fresh "
                     f"process; peak RSS is that process's ({speed['cpu_count']} CPUs).")
    meta = next((r["meta"] for r in results if "meta" in r), None)
    if meta:
        notes.append("Tools: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v) + ".")
    return notes


def _cell(result: dict, path: str, fmt: str) -> str:
    value = _get(result, path)
    if value is None:
        return _DASH
    if fmt == "size":
        return f"{value / MB:,.1f}"
    if fmt.startswith("{:+") and round(value, 2) == 0:
        value = 0.0  # "+0.00", not "-0.00"
    return fmt.format(value).replace("|", "\\|")


def _get(result: dict, path: str):
    node = result
    for key in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _label(result: dict) -> str:
    name, precision = _get(result, "model.name"), _get(result, "model.precision")
    if name and precision and precision not in name:
        return f"{name} ({precision})"
    return name or precision or "?"


def plot(results: list[dict], path: Path, title: str = "Model evaluation") -> Path:
    """Perplexity and decode tokens/s against model size, one labelled point per build. A panel
    with nothing to show says so, so the image is always valid."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    fig, (quality, speed) = plt.subplots(1, 2, figsize=(12, 5), dpi=110)
    fig.suptitle(title)

    points = [(_get(r, "model.size_bytes") / MB, _get(r, "perplexity.onnx"), _label(r)) for r in results
              if _get(r, "model.size_bytes") is not None and _get(r, "perplexity.onnx") is not None]
    sources = sorted({round(s, 6) for r in results if (s := _get(r, "perplexity.source")) is not None})
    _scatter(quality, points, "perplexity (ONNX, lower is better)",
             "no perplexity measured (needs a build without prune_lm_head)", extra_y=sources[:1])
    if len(sources) == 1 and points:
        quality.axhline(sources[0], color="grey", linestyle="--", linewidth=1)
        quality.annotate(f"source model: {sources[0]:.4g}", (0.01, sources[0]), xycoords=("axes fraction", "data"),
                         textcoords="offset points", xytext=(0, 4), fontsize=8, color="grey")
    quality.set_title("quality against size")

    points = [(_get(r, "model.size_bytes") / MB, _get(r, "speed.decode_tokens_per_s"), _label(r)) for r in results
              if _get(r, "model.size_bytes") is not None and _get(r, "speed.decode_tokens_per_s") is not None]
    _scatter(speed, points, "decode tokens/s (higher is better)", "no speed measured")
    speed.set_title("decode speed against size")

    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return Path(path)


def _scatter(ax, points: list[tuple[float, float, str]], ylabel: str, empty: str, extra_y=()) -> None:
    ax.set_xlabel("model size (MB, ONNX files)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if not points:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, color="grey")
        return
    xs, ys, _ = zip(*points)
    ax.plot(xs, ys, "o", markersize=7)
    # Neighbours in size take turns above and below their point, so close labels do not overlap.
    for i, (x, y, label) in enumerate(sorted(points)):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 6 if i % 2 == 0 else -14), fontsize=9)
    # Room for the labels, and a sensible frame around a single point.
    _pad(ax.set_xlim, xs, low=0)
    _pad(ax.set_ylim, [*ys, *extra_y])


def _pad(setter, values, low: float | None = None) -> None:
    lo, hi = min(values), max(values)
    span = (hi - lo) or abs(hi) or 1.0
    lo, hi = lo - 0.15 * span, hi + 0.25 * span
    setter(max(lo, low) if low is not None else lo, hi)
