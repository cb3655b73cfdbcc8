"""Output-speed benchmark: decode tokens/s of our int4, int8 and fp32 builds against transformers
fp32 on the same model, and against a memory-bandwidth roofline (issue 5).

    .venv/bin/python benchmarks/bench_speed.py            # full run (about 3 minutes on 2 cores, builds cached)
    .venv/bin/python benchmarks/bench_speed.py --quick    # shorter runs, for a smoke check

Models: the Qwen2.5-0.5B-shaped random model (benchmarks/shaped.py) and the small trained Qwen2
(models/tiny-qwen2-trained; tiny, so overhead-bound: it shows the floor, not the roofline). Each
is built at int4, int8 and fp32 for cpu with our own runner, through a pass cache under
benchmarks/.work/ (the first run also builds, about 2 minutes more; later runs reuse the builds).

In one run on this machine it measures:

- the memory read bandwidth: numpy streaming reads of a 1 GiB array (32 times this machine's
  L3), on one thread and on as many threads as cores, and a BLAS dot product; the fastest is the
  roofline's bandwidth. Measured at the start and again at the end (the higher is used).
- each ONNX folder's speed with pipeline.evaluate.speed_subprocess (a fresh process, KV cache
  sized to prompt + new tokens, greedy): time to first token, prompt and decode tokens/s, peak RSS.
- transformers fp32 on the same source folder, in a fresh process of its own (see hf_speed).
- bytes read from memory per decoded token: the weights each token reads (from the ONNX graph's
  initializers, or the torch parameters) plus the KV cache at the mean decode position.

roofline tokens/s = bandwidth / bytes per token: what decode would reach if it did nothing but
stream the weights once per token at the measured bandwidth. Prints a markdown table and writes
benchmarks/results/speed.json (machine, tool versions, git commit, every number) and
benchmarks/results/speed.md (the table).

Exits 0 however slow a model is (a benchmark informs, it is not a test) and 1 only when a
measurement cannot be made (a build or a speed run fails).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench_build import (
    CONTENDED,
    QUIET_CORES,
    RETRIES,
    VENV_BIN,
    QuietWait,
    cpu_busy_s,
    run_header,
    write_results,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / ".work"
CACHE = WORK / "cache"
BUILDS = WORK / "builds"
PRECISIONS = ("int4", "int8", "fp32")
# (key, label) of each model; the source folders are resolved in main().
MODELS = (("qwen2.5-0.5b-shaped", "Qwen2.5-0.5B-shaped (random weights)"),
          ("tiny-qwen2-trained", "tiny-qwen2-trained (3 layers, hidden 128)"))
BANDWIDTH_BYTES = 1 << 30
BANDWIDTH_PASSES = 7

# What reads one row of a table per token rather than the whole table: (op type, input index).
# An embedding lookup, the int4 embedding (GatherBlockQuantized: data, scales, zero points), and
# the rotary cos/sin caches, indexed by position.
ROW_LOOKUPS = {("Gather", 0), ("GatherBlockQuantized", 0), ("GatherBlockQuantized", 2),
               ("GatherBlockQuantized", 3), ("GroupQueryAttention", 7), ("GroupQueryAttention", 8),
               ("RotaryEmbedding", 2), ("RotaryEmbedding", 3)}
# Ops that hand their input on unchanged in content (ONNX Runtime folds them on constants at load):
# an initializer is followed through them to the ops that really read it.
PASS_THROUGH = {"Reshape", "Transpose", "Cast", "Identity", "Squeeze", "Unsqueeze", "Flatten"}


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- builds -------------------------------------------------------------------------------------

def build_folder(model_key: str, source: Path, precision: str) -> tuple[Path, dict]:
    """Build `source` at `precision` for cpu with our runner, through the benchmark's cache:
    a rerun with nothing changed only checks and says up to date."""
    from pipeline.cache import Cache
    from pipeline.recipe import recipe_from_dict
    from pipeline.runner import build

    recipe = recipe_from_dict({
        "name": f"{model_key}-{precision}",
        "model": {"source": str(source)},
        "target": {"device": "cpu", "execution_provider": "cpu"},
        "passes": [{"type": "model-builder", "precision": precision}],
    })
    t = time.monotonic()
    result = build(recipe, BUILDS / f"{model_key}-{precision}", cache=Cache(CACHE),
                   log=lambda m: progress(f"    {m}"))
    return result.folder, {"seconds": round(time.monotonic() - t, 1), "up_to_date": result.up_to_date,
                           "ran": list(result.ran), "params": recipe.passes[0]}


# -- memory bandwidth ---------------------------------------------------------------------------

def measure_bandwidth(threads: int) -> dict:
    """Read bandwidth in GB/s (1e9 bytes/s) of streaming over a BANDWIDTH_BYTES float64 array:
    numpy max (a read with no arithmetic to wait on) on one thread and on `threads` threads
    (each its own slice; numpy releases the GIL in reductions), and a BLAS dot(a, a) (one
    stream, BLAS's own threads). Median of BANDWIDTH_PASSES passes each, after one untimed pass:
    on a shared virtual machine single passes spike (60 GB/s once where the median was 37)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    a = np.arange(BANDWIDTH_BYTES // 8, dtype=np.float64)  # written: every page is there, and distinct

    def rate(fn) -> float:
        fn()
        times = []
        for _ in range(BANDWIDTH_PASSES):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return a.nbytes / statistics.median(times) / 1e9

    result = {"array_bytes": a.nbytes, "passes": BANDWIDTH_PASSES, "threads": threads,
              "max_1_thread_gb_s": rate(a.max)}
    parts = np.array_split(a, threads)
    with ThreadPoolExecutor(threads) as pool:
        result[f"max_{threads}_threads_gb_s"] = rate(lambda: list(pool.map(np.max, parts)))
    result["blas_dot_gb_s"] = rate(lambda: a.dot(a))
    result["best_gb_s"] = max(v for k, v in result.items() if k.endswith("_gb_s"))
    return result


def l3_bytes() -> int | None:
    try:
        for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
            if (index / "level").read_text().strip() == "3":
                size = (index / "size").read_text().strip()
                return int(size[:-1]) * {"K": 1 << 10, "M": 1 << 20}[size[-1]] if size[-1] in "KM" else int(size)
    except (OSError, ValueError):
        pass
    return None


# -- bytes read per decoded token ---------------------------------------------------------------

def kv_position(prompt_tokens: int, new_tokens: int) -> float:
    """Mean number of KV cache positions a decode step reads. The timed decode steps run the
    model on the tokens at positions prompt .. prompt + new - 2 (the first new token comes from
    the prompt's pass), and the step at position p reads p + 1 entries: mean prompt + new / 2."""
    return prompt_tokens + new_tokens / 2


def _tensor_bytes(tensor) -> int:
    import onnx

    for entry in tensor.external_data:
        if entry.key == "length":
            return int(entry.value)
    if tensor.raw_data:
        return len(tensor.raw_data)
    numel = math.prod(tensor.dims)
    if tensor.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4, onnx.TensorProto.FLOAT4E2M1):
        return (numel + 1) // 2
    return numel * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def _nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _nodes(sub)


def onnx_bytes_per_token(folder: Path, kv_pos: float) -> dict:
    """Bytes one decode step reads, from the decoder graph: every initializer in full, except
    those only ever read a row at a time (ROW_LOOKUPS, followed through PASS_THROUGH ops): one
    row of those (the largest dimension is the one indexed: vocabulary or position). An
    initializer read both ways (tied embeddings: lm_head and lookup) counts in full plus a row.
    Plus the KV cache at `kv_pos` positions, in the graph's KV dtype."""
    import onnx

    from pipeline.evaluate import graph_initializers

    genai = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))["model"]
    decoder = genai["decoder"]
    proto = onnx.load(str(folder / decoder["filename"]), load_external_data=False)
    consumers: dict[str, list] = {}
    for node in _nodes(proto.graph):
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))

    def reads(name: str, seen: set) -> set[str]:
        """'full' and/or 'row': how the value `name` is read, through pass-through ops."""
        kinds = set()
        for node, i in consumers.get(name, []):
            if (node.op_type, i) in ROW_LOOKUPS:
                kinds.add("row")
            elif node.op_type in PASS_THROUGH and i == 0 and node.output[0] not in seen:
                kinds |= reads(node.output[0], seen | {node.output[0]})
            else:
                kinds.add("full")
        return kinds

    total = weights = 0
    lookups = []
    for tensor in graph_initializers(proto.graph):
        size = _tensor_bytes(tensor)
        total += size
        kinds = reads(tensor.name, {tensor.name})
        row = size // max(tensor.dims) if "row" in kinds and tensor.dims else 0
        weights += (size if "full" in kinds else 0) + row
        if "row" in kinds:
            lookups.append({"name": tensor.name, "shape": list(tensor.dims), "bytes": size, "row_bytes": row,
                            "also_read_in_full": "full" in kinds})
    past = decoder["inputs"]["past_key_names"] % 0
    kv_type = next((v.type.tensor_type.elem_type for v in proto.graph.input if v.name == past), onnx.TensorProto.FLOAT)
    kv_itemsize = onnx.helper.tensor_dtype_to_np_dtype(kv_type).itemsize
    per_position = 2 * decoder["num_hidden_layers"] * decoder["num_key_value_heads"] * decoder["head_size"] * kv_itemsize
    return {"initializer_bytes": total, "weights_read_bytes": weights, "row_lookups": lookups,
            "kv_dtype": onnx.TensorProto.DataType.Name(kv_type), "kv_bytes_per_position": per_position,
            "kv_mean_positions": kv_pos, "kv_read_bytes": round(per_position * kv_pos),
            "bytes_per_token": weights + round(per_position * kv_pos)}


# -- transformers fp32 --------------------------------------------------------------------------

def hf_speed(source: Path, *, prompt_tokens: int, new_tokens: int, repeats: int, threads: int) -> dict:
    """transformers fp32 decode speed of `source`, measured as pipeline.evaluate.measure_speed
    measures an ONNX folder, in this (fresh) process: the same prompt (the corpus, through the
    source's tokenizer, repeated to `prompt_tokens`), greedy, `new_tokens` new tokens, one
    warm-up, then at least `repeats` runs and MIN_MEASURED_S seconds of runs; medians.

    The loop is the model's forward with its KV cache (DynamicCache), token by token, argmax on
    the last logits: the least work transformers can do per token (no logits processors or
    stopping criteria, as generate() would add), so the speed-up against it is not flattered.
    The prompt pass keeps only the last position's logits, as generate() does (the ONNX graph
    computes them for every prompt position). Time to first token: prompt pass + argmax; decode
    tokens/s: the new_tokens - 1 forward passes after it, as measure_speed counts them."""
    import numpy as np
    import torch
    import transformers

    from pipeline.evaluate import CORPUS, MAX_RUNS, MIN_MEASURED_S, peak_rss_mb

    torch.set_num_threads(threads)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    rss_before = peak_rss_mb()
    t = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32).eval()
    load_s = time.perf_counter() - t
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
    corpus = tokenizer(CORPUS.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
    prompt = torch.tensor(np.resize(np.asarray(corpus, dtype=np.int64), prompt_tokens)).unsqueeze(0)

    runs, measured, produced = [], 0.0, []
    with torch.inference_mode():
        while len(runs) < repeats + 1 or (measured < MIN_MEASURED_S and len(runs) <= MAX_RUNS):
            cache = transformers.DynamicCache(config=model.config)
            t0 = time.perf_counter()
            out = model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1)
            t1 = time.perf_counter()
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            tokens = [int(token)]
            t2 = time.perf_counter()
            for _ in range(new_tokens - 1):
                out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
                token = out.logits[:, -1].argmax(-1, keepdim=True)
                tokens.append(int(token))
            t3 = time.perf_counter()
            runs.append({"ttft": t2 - t0, "prompt": prompt_tokens / (t1 - t0), "decode": (new_tokens - 1) / (t3 - t2)})
            measured += (t3 - t0) if len(runs) > 1 else 0.0
            produced = tokens
    runs = runs[1:]
    peak = peak_rss_mb()

    # Bytes per token, by the same rule as onnx_bytes_per_token: every parameter once (tied
    # embeddings are one tensor: lm_head reads it in full), plus one row of the input embedding.
    params = {p.data_ptr(): p for p in model.parameters()}
    param_bytes = sum(p.numel() * p.element_size() for p in params.values())
    embed = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    tied = output is not None and output.weight.data_ptr() == embed.data_ptr()
    row = embed[0].numel() * embed.element_size()
    weights = param_bytes + row - (0 if tied else embed.numel() * embed.element_size())
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_position = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 4
    kv_pos = kv_position(prompt_tokens, new_tokens)
    return {
        "time_to_first_token_s": statistics.median(r["ttft"] for r in runs),
        "prompt_tokens_per_s": statistics.median(r["prompt"] for r in runs),
        "decode_tokens_per_s": statistics.median(r["decode"] for r in runs),
        "decode_runs": [r["decode"] for r in runs],
        "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "repeats": repeats, "runs": len(runs),
        "load_s": load_s, "peak_rss_mb": peak, "rss_before_load_mb": rss_before, "model_rss_mb": peak - rss_before,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "last_tokens": produced[:8],
        "bytes": {"param_bytes": param_bytes, "tied_embeddings": tied, "weights_read_bytes": weights,
                  "kv_dtype": "FLOAT", "kv_bytes_per_position": per_position, "kv_mean_positions": kv_pos,
                  "kv_read_bytes": round(per_position * kv_pos),
                  "bytes_per_token": weights + round(per_position * kv_pos)},
    }


def hf_subprocess(source: Path, *, prompt_tokens: int, new_tokens: int, repeats: int, threads: int,
                  timeout: float = 1800) -> dict:
    """hf_speed in a fresh process, so its peak RSS is transformers' and the model's alone."""
    cmd = [sys.executable, __file__, "--hf-worker", str(source), "--prompt-tokens", str(prompt_tokens),
           "--new-tokens", str(new_tokens), "--repeats", str(repeats), "--threads", str(threads)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise MeasureError(f"transformers speed of {source} took over {timeout:.0f} s; stopped it") from None
    if done.returncode != 0:
        raise MeasureError(f"transformers speed of {source} failed: "
                           + (done.stderr.strip().splitlines() or ["(no output)"])[-1])
    return json.loads(done.stdout)


# -- measuring on a shared machine --------------------------------------------------------------

class MeasureError(Exception):
    """A measurement could not be made."""


class Machine(QuietWait):
    """Waits (within a budget) for other processes to leave the CPU before each measurement,
    and says afterwards how much CPU they took meanwhile: on 2 cores, ONNX Runtime and torch use
    both, so another job's load slows them directly."""

    def measure(self, fn) -> tuple[dict, dict]:
        """fn()'s result (it runs in a child process) and {seconds, other_cpu_s, contended, tries}.
        A contended try is measured again, up to RETRIES times while the wait budget lasts; the
        timings of the tries thrown away are kept under `discarded`."""
        discarded = []
        for attempt in range(RETRIES + 1):
            self.quiet()
            b0, t0 = cpu_busy_s(), time.monotonic()
            c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            s0 = resource.getrusage(resource.RUSAGE_SELF)
            result = fn()
            c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            s1 = resource.getrusage(resource.RUSAGE_SELF)
            wall = time.monotonic() - t0
            ours = (c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime
                    + s1.ru_utime + s1.ru_stime - s0.ru_utime - s0.ru_stime)
            other = max(0.0, cpu_busy_s() - b0 - ours)
            timing = {"seconds": round(wall, 1), "other_cpu_s": round(other, 2),
                      "contended": other > CONTENDED * wall + 0.05}
            if not timing["contended"] or attempt == RETRIES or self.wait_left <= 0:
                break
            progress(f"    contended ({other:.1f} CPU s by other processes in {wall:.0f} s): measuring again")
            discarded.append({**timing, "decode_tokens_per_s": result.get("decode_tokens_per_s")})
        return result, {**timing, "tries": len(discarded) + 1, "discarded": discarded}


# -- the run ------------------------------------------------------------------------------------

def row_for(kind: str, speed: dict, nbytes: dict, model_bytes: int, timing: dict) -> dict:
    decode = speed["decode_tokens_per_s"]
    if not decode:
        raise MeasureError(f"{kind}: no decode speed measured")
    return {"kind": kind, "model_bytes": model_bytes, "bytes_per_token": nbytes["bytes_per_token"],
            "decode_tokens_per_s": decode, "achieved_gb_s": decode * nbytes["bytes_per_token"] / 1e9,
            "time_to_first_token_s": speed["time_to_first_token_s"], "prompt_tokens_per_s": speed["prompt_tokens_per_s"],
            "peak_rss_mb": speed["peak_rss_mb"], "contended": timing["contended"], "speed": speed, "bytes": nbytes,
            "timing": timing}


def run_model(machine: Machine, key: str, source: Path, cfg: dict) -> tuple[list, dict]:
    from pipeline.evaluate import model_info, speed_subprocess

    rows, builds = [], {}
    kv_pos = kv_position(cfg["prompt_tokens"], cfg["new_tokens"])
    for precision in PRECISIONS:
        progress(f"  build {key} {precision}")
        folder, builds[precision] = build_folder(key, source, precision)
        progress(f"  speed {key} {precision} (onnxruntime-genai, fresh process)")
        speed, timing = machine.measure(lambda folder=folder: speed_subprocess(
            folder, prompt_tokens=cfg["prompt_tokens"], new_tokens=cfg["new_tokens"], repeats=cfg["repeats"]))
        nbytes = onnx_bytes_per_token(folder, kv_pos)
        row = row_for(f"onnx {precision}", speed, nbytes, model_info(folder)["size_bytes"], timing)
        row["folder"] = str(folder.relative_to(ROOT))
        rows.append(row)
        progress(f"    {speed['decode_tokens_per_s']:.1f} tok/s decode ({timing['seconds']:.0f} s"
                 + (", CONTENDED" if timing["contended"] else "") + ")")
    progress(f"  speed {key} transformers fp32 (fresh process)")
    speed, timing = machine.measure(lambda: hf_subprocess(
        source, prompt_tokens=cfg["prompt_tokens"], new_tokens=cfg["new_tokens"], repeats=cfg["repeats"],
        threads=cfg["threads"]))
    nbytes = speed.pop("bytes")
    rows.append(row_for("transformers fp32", speed, nbytes, nbytes["param_bytes"], timing))
    progress(f"    {speed['decode_tokens_per_s']:.1f} tok/s decode ({timing['seconds']:.0f} s"
             + (", CONTENDED" if timing["contended"] else "") + ")")
    reference = rows[-1]["decode_tokens_per_s"]
    for row in rows:
        row["speedup_vs_transformers_fp32"] = row["decode_tokens_per_s"] / reference
    return rows, builds


def render(info: dict) -> str:
    m, cfg, bw = info["machine"], info["config"], info["bandwidth"]
    git = info["git"]
    lines = [
        (f"Measured {info['date'][:10]} on {m['cpu_model']}, {m['cpus_usable']} cores, {m['memory_gb']:.0f} GB RAM, "
         f"Linux {m['kernel']}, Python {m['python']}, onnxruntime-genai {info['tools'].get('onnxruntime-genai')}, "
         f"onnxruntime {info['tools'].get('onnxruntime')}, torch {info['tools'].get('torch')}, transformers "
         f"{info['tools'].get('transformers')} (commit {git['commit'][:10]}"
         f"{', uncommitted changes' if git['dirty'] else ''}); {info['bench_seconds']:.0f} s in all."),
        "",
        (f"Decode: {cfg['prompt_tokens']} prompt tokens, {cfg['new_tokens']} new tokens, greedy; medians of at least "
         f"{cfg['repeats']} run(s) after a warm-up, each in a fresh process (onnxruntime-genai: "
         f"`pipeline.evaluate.speed_subprocess`; transformers: its forward with a KV cache, token by token, "
         f"{cfg['threads']} torch threads)."),
        (f"Roofline bandwidth: **{bw['best_gb_s']:.1f} GB/s**, the fastest streaming read of a "
         f"{bw['runs'][0]['array_bytes'] >> 20} MiB array (numpy max on 1 and {bw['runs'][0]['threads']} threads, "
         f"BLAS dot; median of {bw['runs'][0]['passes']} passes each), measured at the start and at the end: "
         + "; ".join(", ".join(f"{k[:-5].replace('_', ' ')} {v:.1f}" for k, v in r.items() if k.endswith("_gb_s")
                               and k != "best_gb_s") for r in bw["runs"]) + " GB/s."
         + _spread_note([r["best_gb_s"] for r in bw["runs"]])),
        "",
    ]
    for model in info["models"]:
        lines += [
            f"### {model['label']}",
            "",
            ("| Build | model MB | read/token MB | decode tok/s | roofline tok/s | of roofline "
             "| vs transformers fp32 | TTFT s | prompt tok/s | peak RSS MB |"),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in model["rows"]:
            flag = " (contended)" if r["contended"] else ""
            lines.append(
                f"| {r['kind']}{flag} | {_mb(r['model_bytes'])} | {_mb(r['bytes_per_token'])} "
                f"| {r['decode_tokens_per_s']:.1f} | {r['roofline_tokens_per_s']:.0f} | {r['roofline_fraction']:.0%} "
                f"| {r['speedup_vs_transformers_fp32']:.2f}x | {r['time_to_first_token_s']:.3f} "
                f"| {r['prompt_tokens_per_s']:.0f} | {r['peak_rss_mb']:.0f} |")
        lines.append("")
        lines += model["notes"]
        lines.append("")
    lines += [
        "How to read it:",
        "",
        ("- *read/token*: bytes one decode step reads from memory. ONNX: every initializer of the decoder graph, "
         "except tables only looked up a row at a time (the embedding's Gather/GatherBlockQuantized, the rotary "
         "cos/sin caches): one row of those; a table read both ways (int4's embedding shares lm_head's "
         "quantized weight) counts in full. transformers: every parameter once (tied embeddings: lm_head reads "
         "the matrix, the lookup one row). Both: plus the KV cache at the mean decode position "
         f"({cfg['kv_mean_positions']:.0f} positions), fp32."),
        ("- *roofline tok/s* = bandwidth / read per token: decode if it did nothing but stream its weights at the "
         "measured bandwidth; *of roofline* = measured / roofline."),
        ("- *model MB*: ONNX files on disk (graph + data); for transformers the fp32 parameters. *peak RSS*: "
         "VmHWM of the fresh measuring process (Python, the runtime and the model). *TTFT*: the prompt's pass "
         "and the first token."),
        ("- A weight set that fits in the caches (the tiny model) is not bound by memory bandwidth: its roofline "
         "is not a ceiling, and its speed is per-token overhead (runtime, Python, kernel launch)."),
    ]
    contended = [f"{mm['key']} {r['kind']}" for mm in info["models"] for r in mm["rows"] if r["contended"]]
    if contended:
        lines += ["", (f"Contended (other processes used more than {CONTENDED:.0%} of a core during the "
                       f"measurement, on each of up to {RETRIES + 1} tries): {', '.join(contended)}; read those rows "
                       "with care or run again on a quiet machine.")]
    return "\n".join(lines) + "\n"


def _spread_note(values: list[float]) -> str:
    spread = max(values) / min(values) - 1
    if spread < 0.1:
        return ""
    return (f" The two differ by {spread:.0%}: this shared virtual machine's bandwidth moves with its neighbours' "
            "load, so a roofline fraction is uncertain by about that much (the higher bandwidth makes it conservative).")


def _mb(n: float) -> str:
    """Megabytes, three significant figures below 100."""
    return f"{n / 1e6:.0f}" if n >= 1e8 else f"{n / 1e6:.3g}"


def notes_for(rows: list[dict], l3: int | None) -> list[str]:
    by = {r["kind"]: r for r in rows}
    notes = ["Read bandwidth achieved in decode (tok/s x read/token): "
             + ", ".join(f"{r['kind']} {r['achieved_gb_s']:.1f} GB/s" for r in rows) + "."]
    for r in rows:
        tables = [t for t in r["bytes"].get("row_lookups", []) if not t["also_read_in_full"] and t["bytes"] > 1e6]
        if tables and sum(t["bytes"] for t in tables) > 0.1 * r["model_bytes"]:
            notes.append(f"{r['kind']}: {_mb(sum(t['bytes'] for t in tables))} MB of its {_mb(r['model_bytes'])} MB "
                         "are tables read a row per token ("
                         + ", ".join(f"{t['name']} {_mb(t['bytes'])} MB" for t in tables) + ").")
    i4, i8 = by.get("onnx int4"), by.get("onnx int8")
    if i4 and i8:
        reads = i8["bytes_per_token"] / i4["bytes_per_token"]
        speed = i4["decode_tokens_per_s"] / i8["decode_tokens_per_s"]
        notes.append(f"int4 reads {reads:.2f}x fewer bytes per token than int8 and decodes {speed:.2f}x as fast"
                     + ("; the speed-up falls short of the bytes saved, probably because per byte read, int4's kernel does "
                        "more work (two weights unpacked from each byte), so it streams "
                        f"{i4['achieved_gb_s']:.1f} GB/s to int8's {i8['achieved_gb_s']:.1f}."
                        if i4["achieved_gb_s"] < 0.9 * i8["achieved_gb_s"] and i4["bytes_per_token"] > (l3 or 0)
                        else "."))
    if l3 and all(r["bytes_per_token"] < l3 for r in rows):
        notes.append(f"Every build's read per token fits in the {l3 >> 20} MiB L3 cache: not memory-bound, the roofline "
                     "does not apply (shown for completeness).")
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 prompt + 16 new tokens, 1 run each (a smoke check)")
    parser.add_argument("--prompt-tokens", type=int, default=None, help="prompt length (default 128)")
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens generated per run (default 64)")
    parser.add_argument("--repeats", type=int, default=None, help="least runs per measurement (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable cores)")
    parser.add_argument("--models", default=",".join(k for k, _ in MODELS), help="comma-separated (default: both)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where speed.json and speed.md go")
    parser.add_argument("--max-wait", type=float, default=300.0,
                        help="seconds, in all, to wait for other processes to leave the CPU (default 300)")
    parser.add_argument("--hf-worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    threads = args.threads or cores
    if args.hf_worker:
        print(json.dumps(hf_speed(args.hf_worker, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens,
                                  repeats=args.repeats, threads=threads)))
        return 0
    venv_python = VENV_BIN / "python"
    if venv_python.exists() and Path(sys.prefix).resolve() != venv_python.parent.parent.resolve():
        # The runtimes measured are the venv's: run in it.
        os.execv(venv_python, [str(venv_python), __file__, *(sys.argv[1:] if argv is None else argv)])
    cfg = {"prompt_tokens": args.prompt_tokens or (32 if args.quick else 128),
           "new_tokens": args.new_tokens or (16 if args.quick else 64),
           "repeats": args.repeats or (1 if args.quick else 5), "threads": threads, "quick": args.quick}
    wanted = args.models.split(",")
    unknown = sorted(set(wanted) - {k for k, _ in MODELS})
    if unknown:
        parser.error(f"unknown model {', '.join(unknown)} (known: {', '.join(k for k, _ in MODELS)})")

    from pipeline.errors import PipelineError

    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    machine = Machine(args.max_wait)
    l3 = l3_bytes()
    progress(f"bench: speed of {', '.join(wanted)} at {', '.join(PRECISIONS)} and transformers fp32; "
             f"{cfg['prompt_tokens']} prompt + {cfg['new_tokens']} new tokens, {cfg['repeats']}+ runs")
    bandwidth_runs = []
    try:
        progress("  memory bandwidth")
        machine.quiet()
        bandwidth_runs.append(measure_bandwidth(cores))
        progress(f"    {bandwidth_runs[-1]['best_gb_s']:.1f} GB/s")
        models = []
        for key, label in MODELS:
            if key not in wanted:
                continue
            if key == "qwen2.5-0.5b-shaped":
                from shaped import qwen05b_shaped

                source = qwen05b_shaped(log=lambda m: progress(f"  {m}"))
            else:
                source = ROOT / "models" / key
            rows, builds = run_model(machine, key, source, cfg)
            models.append({"key": key, "label": label, "source": str(source.relative_to(ROOT)), "rows": rows,
                           "builds": builds})
        progress("  memory bandwidth, again")
        machine.quiet()
        bandwidth_runs.append(measure_bandwidth(cores))
        progress(f"    {bandwidth_runs[-1]['best_gb_s']:.1f} GB/s")
    except (MeasureError, PipelineError) as e:  # a build or a speed run failed: its message says why
        progress(f"error: {e}")
        return 1

    # The roofline: the higher of the two bandwidth measurements (the machine can do at least that).
    best = max(r["best_gb_s"] for r in bandwidth_runs)
    for model in models:
        for row in model["rows"]:
            row["roofline_tokens_per_s"] = best * 1e9 / row["bytes_per_token"]
            row["roofline_fraction"] = row["decode_tokens_per_s"] / row["roofline_tokens_per_s"]
        model["notes"] = notes_for(model["rows"], l3)
    header = run_header(started, t0)
    info = {
        **header,
        "machine": {**header["machine"], "l3_bytes": l3},
        "config": {**cfg, "kv_mean_positions": kv_position(cfg["prompt_tokens"], cfg["new_tokens"]),
                   "max_wait_s": args.max_wait, "waited_s": machine.waited_s,
                   "contended_share": CONTENDED, "quiet_cores": QUIET_CORES, "retries": RETRIES},
        "bandwidth": {"best_gb_s": best, "runs": bandwidth_runs},
        "models": models,
    }
    write_results(args.results, "speed", "Speed benchmark",
                  ".venv/bin/python benchmarks/bench_speed.py" + (" --quick" if args.quick else ""), info, render(info))
    progress(f"wrote {args.results / 'speed.json'} and {args.results / 'speed.md'} ({info['bench_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
