"""Evaluate a built folder: perplexity, parity with its source model, speed, size.

    evaluate(Path("artifacts/tiny-qwen2-int4"), Path("models/tiny-qwen2-chat"))  # -> metrics dict
    python -m pipeline.evaluate --speed-only artifacts/tiny-qwen2-int4 --json      # speed, fresh process

Perplexity runs the ONNX model (onnxruntime-genai) and the source model (transformers, float32)
on the same token ids: the folder's tokenizer encodes the text once, and both models score those
ids. One `append_tokens` of a whole window on a fresh generator gives logits for every position
(checked with onnxruntime-genai 0.18: `get_output("logits")` is [1, seq, vocab] after the first
append), unless the model was built with `prune_lm_head` (last-token logits only). The sliding
window is Hugging Face's: each window scores only the tokens no earlier window scored, the first
window all but its first token, so with stride < window every scored token has at least
window - stride tokens of context. The next-token distribution parity (top-1, KL) reuses those
logits; the models are not run twice.

Speed runs in a fresh `python -m pipeline.evaluate --speed-only` process, so its peak RSS is
the model's plus a bare Python with onnxruntime-genai, not whatever the caller loaded before.

The metrics dict (JSON-able; a section is present only when it could be computed, and
`skipped` says why one is not):

    {"model":  {"name", "folder", "precision", "execution_provider", "size_bytes", "files"},
                # precision, provider from build.json (null without one); size and count of the
                # ONNX files (graphs + external data)
     "perplexity": {"onnx", "source", "increase_pct",   # source/increase_pct null without source
                    "tokens_scored", "text_tokens", "window", "stride", "text", "text_sha256",
                    "same_token_ids"},   # did transformers' tokenizer give the folder's ids
     "parity": {"greedy_agreement",   # mean over prompts of matched tokens before the first
                                      # divergence / max_new_tokens (1.0 when identical)
                "exact_match",        # fraction of prompts whose greedy outputs are identical
                "greedy_per_prompt", "prompts", "max_new_tokens",
                "top1_agreement",     # argmax equal, over the perplexity positions
                "kl_divergence",      # mean KL(source || onnx) in nats, float64
                "positions"},         # top1/kl null when the model has last-token logits only
     "speed":  {"time_to_first_token_s", "prompt_tokens_per_s", "decode_tokens_per_s",  # medians
                "prompt_tokens", "new_tokens", "max_length", "repeats", "runs", "load_s",
                "peak_rss_mb", "rss_before_load_mb", "model_rss_mb",
                "intra_op_num_threads",   # from genai_config; null: ONNX Runtime's default
                "process_threads", "cpu_count"},
     "skipped": {"<section or metric path>": "why it was not measured"},
     "meta":   {"source", "seconds", "versions": {python, onnxruntime-genai, onnxruntime,
                                                  transformers, torch, numpy}}}

CHECKS maps the recipe's `checks:` names to a metric path and direction; `apply_checks` turns a
metrics dict and thresholds into pass/fail results with one-line messages.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.errors import PipelineError, SourceError

DATA = Path(__file__).parent / "data"
HELDOUT = DATA / "heldout.txt"
CORPUS = DATA / "corpus.txt"
CORPUS_TAIL_CHARS = 8192

DEFAULT_PROMPTS = (
    "Tell me a short fable about a fox.",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a tokenizer does in one sentence.",
)

CHECKS = {
    "max_perplexity_increase_pct": ("perplexity.increase_pct", "max"),
    "max_perplexity": ("perplexity.onnx", "max"),
    "min_top1_agreement": ("parity.top1_agreement", "min"),
    "max_kl_divergence": ("parity.kl_divergence", "max"),
    "min_greedy_agreement": ("parity.greedy_agreement", "min"),
    "min_decode_tokens_per_s": ("speed.decode_tokens_per_s", "min"),
    "max_time_to_first_token_s": ("speed.time_to_first_token_s", "max"),
    "max_peak_rss_mb": ("speed.peak_rss_mb", "max"),
}

# Speed: runs beyond `repeats` until this much time is measured (at most MAX_RUNS).
MIN_MEASURED_S = 1.0
MAX_RUNS = 100
# Rows of logits turned into float64 at a time: bounds memory for 150k-token vocabularies.
_ROWS = 64
_VERSIONED = ("onnxruntime-genai", "onnxruntime", "transformers", "torch", "numpy")


class EvaluationError(PipelineError):
    """A folder, source or text cannot be evaluated; or a measurement failed."""


@dataclass(frozen=True)
class CheckResult:
    name: str  # e.g. max_perplexity_increase_pct
    metric: str  # path in the metrics dict, e.g. perplexity.increase_pct
    measured: float | None  # None: not measured
    threshold: float
    passed: bool
    message: str  # one line, e.g. "max_...: measured 4.12 > threshold 3 (perplexity.increase_pct)"

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# The whole evaluation


def evaluate(folder: Path, source: Path | None = None, *, text: str | None = None,
             prompts: Sequence[str] = DEFAULT_PROMPTS, window: int = 256, stride: int = 128,
             max_new_tokens: int = 16, speed: bool = True, speed_prompt_tokens: int = 128,
             speed_new_tokens: int = 64, speed_repeats: int = 3,
             log: Callable[[str], None] = lambda m: None) -> dict:
    """Measure `folder` (a built model folder) and, given its Hugging Face `source` folder,
    compare it with that model. Returns the metrics dict described in the module docstring.
    Raises EvaluationError (or OutputError/SourceError) with one line for bad input."""
    started = time.perf_counter()
    folder = Path(folder)
    genai, info = _read_folder(folder)
    context = int(genai["model"].get("context_length") or 0) or None
    if source is not None:
        source = Path(source)
        if not (source / "config.json").is_file():
            raise SourceError(f"source model {source}: not a Hugging Face model folder (no config.json); "
                              "pass the folder the build was made from")
    if not 2 <= window or (context and window > context):
        raise EvaluationError(f"window {window}: must be between 2 and the model's context length ({context})")
    if not 1 <= stride <= window:
        raise EvaluationError(f"stride {stride}: must be between 1 and the window ({window})")
    if max_new_tokens < 1:
        raise EvaluationError(f"max_new_tokens {max_new_tokens}: must be at least 1")
    if source is not None and not [p for p in prompts if p.strip()]:
        raise EvaluationError("no prompts for greedy parity: give at least one")
    text, text_origin = _resolve_text(text)

    metrics: dict = {"model": model_info(folder)}
    skipped: dict[str, str] = {}

    import onnxruntime_genai as og

    try:
        og_model = og.Model(str(folder))
    except Exception as e:  # the runtime's own message names the problem
        raise EvaluationError(f"{folder}: onnxruntime-genai cannot load it: {e}") from None
    tokenizer = og.Tokenizer(og_model)
    ids = [int(i) for i in tokenizer.encode(text)]
    if len(ids) < window:
        raise EvaluationError(f"the text to score ({text_origin}) is {len(ids)} tokens; perplexity needs at least one "
                              f"window of {window}: give a longer text or a smaller window")

    hf_model = same_ids = None
    if source is not None:
        hf_model, hf_tokenizer = _load_source(source, log)
        with _quiet_transformers():
            hf_ids = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
        same_ids = list(hf_ids) == ids
        if not same_ids:
            log("transformers' tokenizer gives other ids than the folder's; both models score the folder's ids")
    else:
        skipped["parity"] = "no source model given"

    # Perplexity and next-token distribution parity, from one pass over the windows.
    log(f"perplexity: {len(ids)} tokens, window {window}, stride {stride}")
    scored = _score_windows(og, og_model, hf_model, ids, window, stride)
    if scored is None:
        why = ("the model returns logits for the last token only (built with extra_options.prune_lm_head); "
               "perplexity, top-1 and KL need a build without it")
        skipped["perplexity"] = why
        skipped["parity.top1_agreement"] = skipped["parity.kl_divergence"] = why
    else:
        ppl_onnx = _exp(scored["nll_onnx"] / scored["n"])
        ppl_src = _exp(scored["nll_source"] / scored["n"]) if hf_model is not None else None
        metrics["perplexity"] = {
            "onnx": ppl_onnx,
            "source": ppl_src,
            "increase_pct": (ppl_onnx / ppl_src - 1) * 100 if ppl_src and math.isfinite(ppl_src * ppl_onnx) else None,
            "tokens_scored": scored["n"],
            "text_tokens": len(ids),
            "window": window,
            "stride": stride,
            "text": text_origin,
            "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "same_token_ids": same_ids,
        }
        if hf_model is None:
            skipped["perplexity.source"] = skipped["perplexity.increase_pct"] = "no source model given"

    if hf_model is not None:
        log(f"greedy parity: {len(prompts)} prompts, {max_new_tokens} new tokens")
        greedy = _greedy_parity(og, og_model, tokenizer, hf_model, genai, info, prompts, max_new_tokens, context)
        metrics["parity"] = {
            **greedy,
            "top1_agreement": scored["top1"] / scored["n"] if scored else None,
            "kl_divergence": scored["kl"] / scored["n"] if scored else None,
            "positions": scored["n"] if scored else 0,
        }
    del og_model, hf_model

    if speed:
        log(f"speed: {speed_prompt_tokens} prompt + {speed_new_tokens} new tokens, fresh process")
        metrics["speed"] = speed_subprocess(folder, prompt_tokens=speed_prompt_tokens,
                                            new_tokens=speed_new_tokens, repeats=speed_repeats)
    else:
        skipped["speed"] = "speed measurement turned off"

    metrics["skipped"] = skipped
    metrics["meta"] = {"source": str(source) if source is not None else None,
                       "seconds": round(time.perf_counter() - started, 3), "versions": tool_versions()}
    return metrics


# ---------------------------------------------------------------------------------------------
# Inputs


def _read_folder(folder: Path) -> tuple[dict, dict]:
    from pipeline.chat import read_model_folder

    return read_model_folder(folder)


def _resolve_text(text: str | None) -> tuple[str, str]:
    """The text to score and where it came from (recorded in the metrics)."""
    if text is not None:
        origin = "given text"
    elif HELDOUT.is_file():
        text, origin = HELDOUT.read_text(encoding="utf-8"), "pipeline/data/heldout.txt"
    else:
        tail = CORPUS.read_text(encoding="utf-8")[-CORPUS_TAIL_CHARS:]
        text = tail[tail.find("\n") + 1:]  # start at a line, not mid-word
        origin = f"pipeline/data/corpus.txt (last {CORPUS_TAIL_CHARS} characters)"
    if not text.strip():
        raise EvaluationError(f"the text to score ({origin}) is empty")
    return text, origin


def source_from_build(folder: Path) -> Path | None:
    """The local source folder build.json records, if it still exists (hub sources: None)."""
    try:
        record = json.loads((Path(folder) / "build.json").read_text(encoding="utf-8"))["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    path = record.get("path")
    return Path(path) if path and (Path(path) / "config.json").is_file() else None


def _load_source(source: Path, log):
    import torch
    import transformers

    log(f"loading source model {source} in transformers (float32)")
    try:
        with _quiet_transformers():
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
            model = transformers.AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32)
    except Exception as e:  # transformers raises many kinds; its message says what is wrong
        raise SourceError(f"source model {source}: transformers cannot load it: {e}") from None
    return model.eval(), tokenizer


@contextlib.contextmanager
def _quiet_transformers():
    """No progress bars, and no "sequence longer than max length" warning: windows keep to it."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def model_info(folder: Path) -> dict:
    """Name, precision and provider (from build.json) and the size of the ONNX files."""
    folder = Path(folder)
    name, precision, provider = folder.name, None, None
    try:
        build = json.loads((folder / "build.json").read_text(encoding="utf-8"))
        name = build.get("name") or name
        provider = (build.get("recipe") or {}).get("target", {}).get("execution_provider")
        for p in build.get("passes") or []:
            if p.get("type") == "model-builder":
                precision = (p.get("params") or {}).get("precision")
    except (OSError, ValueError, AttributeError):
        pass
    files = _onnx_files(folder)
    return {"name": name, "folder": str(folder), "precision": precision, "execution_provider": provider,
            "size_bytes": sum(f.stat().st_size for f in files), "files": len(files)}


def _onnx_files(folder: Path) -> list[Path]:
    """The ONNX graphs in `folder` and the external data files they name."""
    import onnx

    files: set[Path] = set()
    for graph in folder.glob("*.onnx"):
        files.add(graph)
        try:
            proto = onnx.load(str(graph), load_external_data=False)
        except Exception:  # an unreadable graph: count the usual data file beside it
            files.update(folder.glob(graph.name + ".data"))
            continue
        for tensor in graph_initializers(proto.graph):
            for entry in tensor.external_data:
                if entry.key == "location" and (folder / entry.value).is_file():
                    files.add(folder / entry.value)
    return sorted(files)


def graph_initializers(graph):
    """Initializers of `graph` and of the subgraphs its nodes hold (If, Loop, Scan)."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from graph_initializers(sub)


def tool_versions() -> dict[str, str | None]:
    from pipeline.runner import tool_versions as versions_of

    return {"python": sys.version.split()[0], **versions_of(_VERSIONED)}


# ---------------------------------------------------------------------------------------------
# Perplexity and distribution parity


def sliding_windows(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position) of each window over n tokens, Hugging Face's method:
    a window scores positions [first, end) that no earlier window scored; position 0 never."""
    out, prev_end = [], 0
    for begin in range(0, n, stride):
        end = min(begin + window, n)
        out.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n:
            break
    return out


def _score_windows(og, og_model, hf_model, ids: list[int], window: int, stride: int) -> dict | None:
    """Summed NLL of both models, top-1 agreements and KL over the scored positions; None when
    the ONNX model gives last-token logits only."""
    import numpy as np

    totals = {"n": 0, "nll_onnx": 0.0, "nll_source": 0.0, "top1": 0, "kl": 0.0}
    for begin, end, first in sliding_windows(len(ids), window, stride):
        chunk = ids[begin:end]
        params = og.GeneratorParams(og_model)
        params.set_search_options(max_length=len(chunk))  # KV cache the size of the window
        generator = og.Generator(og_model, params)
        generator.append_tokens(np.asarray(chunk, dtype=np.int32))
        onnx_logits = generator.get_output("logits")[0]
        del generator
        if onnx_logits.shape[0] != len(chunk):
            return None
        source_logits = _source_logits(hf_model, chunk) if hf_model is not None else None
        rows = np.arange(first - begin - 1, end - begin - 1)  # logits at t-1 predict token t
        targets = np.asarray(ids[first:end])
        for lo in range(0, len(rows), _ROWS):
            r, t = rows[lo:lo + _ROWS], targets[lo:lo + _ROWS]
            lp_onnx = _log_softmax(onnx_logits[r])
            totals["nll_onnx"] -= float(lp_onnx[np.arange(len(t)), t].sum())
            if source_logits is not None:
                lp_src = _log_softmax(source_logits[r])
                totals["nll_source"] -= float(lp_src[np.arange(len(t)), t].sum())
                totals["top1"] += int((lp_src.argmax(-1) == lp_onnx.argmax(-1)).sum())
                totals["kl"] += float((np.exp(lp_src) * (lp_src - lp_onnx)).sum())
        totals["n"] += len(rows)
    return totals


def _source_logits(hf_model, chunk: list[int]):
    import torch

    with torch.no_grad():
        return hf_model(torch.tensor([chunk], dtype=torch.long)).logits[0].float().numpy()


def _log_softmax(logits):
    import numpy as np

    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _exp(x: float) -> float:
    return math.exp(x) if x < 700 else float("inf")


# ---------------------------------------------------------------------------------------------
# Greedy parity


def _greedy_parity(og, og_model, tokenizer, hf_model, genai: dict, info: dict, prompts: Sequence[str],
                   max_new_tokens: int, context: int | None) -> dict:
    """Pure greedy decoding (no repetition penalty) of each chat-templated prompt in both models,
    from the same prompt ids and with the same eos ids: the comparison is of the models, not of
    their generation configs."""
    import numpy as np
    import torch

    from pipeline.chat import build_prompt

    eos = genai["model"].get("eos_token_id")
    eos = [int(e) for e in (eos if isinstance(eos, list) else [eos])] if eos is not None else None
    pad = genai["model"].get("pad_token_id", eos[0] if eos else None)
    per_prompt, exact = [], 0
    for prompt in prompts:
        ids = [int(i) for i in tokenizer.encode(build_prompt(info, prompt))]
        if context and len(ids) + max_new_tokens > context:
            raise EvaluationError(f"prompt {prompt[:40]!r} is {len(ids)} tokens; with {max_new_tokens} new tokens "
                                  f"it exceeds the context ({context}); shorten it")
        params = og.GeneratorParams(og_model)
        params.set_search_options(max_length=len(ids) + max_new_tokens, do_sample=False, repetition_penalty=1.0)
        generator = og.Generator(og_model, params)
        generator.append_tokens(np.asarray(ids, dtype=np.int32))
        onnx_out = []
        while not generator.is_done():
            generator.generate_next_token()
            onnx_out.append(int(generator.get_next_tokens()[0]))
        del generator
        with torch.no_grad():
            out = hf_model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                    do_sample=False, max_new_tokens=max_new_tokens, repetition_penalty=1.0,
                                    eos_token_id=eos, pad_token_id=pad, temperature=None, top_p=None, top_k=None)
        source_out = [int(t) for t in out[0, len(ids):]]
        if onnx_out == source_out:
            exact += 1
            per_prompt.append(1.0)
        else:
            same = next(i for i, (a, b) in enumerate(zip(onnx_out + [-1], source_out + [-2])) if a != b)
            per_prompt.append(same / max_new_tokens)
    return {"greedy_agreement": sum(per_prompt) / len(per_prompt), "exact_match": exact / len(per_prompt),
            "greedy_per_prompt": per_prompt, "prompts": len(per_prompt), "max_new_tokens": max_new_tokens}


# ---------------------------------------------------------------------------------------------
# Speed


def speed_subprocess(folder: Path, *, prompt_tokens: int = 128, new_tokens: int = 64, repeats: int = 3,
                     timeout: float = 1800) -> dict:
    """`measure_speed` in a fresh Python process, so peak RSS is this model's alone."""
    cmd = [sys.executable, "-m", "pipeline.evaluate", "--speed-only", str(folder), "--json",
           "--prompt-tokens", str(prompt_tokens), "--new-tokens", str(new_tokens), "--repeats", str(repeats)]
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise EvaluationError(f"speed measurement of {folder} took over {timeout:.0f}s; stopped it") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise EvaluationError(f"speed measurement of {folder} failed: {last}")
    return json.loads(done.stdout)


def measure_speed(folder: Path, *, prompt_tokens: int = 128, new_tokens: int = 64, repeats: int = 3) -> dict:
    """Time to first token, prompt and decode tokens/s (medians of at least `repeats` runs and
    of at least MIN_MEASURED_S seconds of runs, after one warm-up) with the KV cache sized to
    prompt + new tokens, and this process's peak RSS. Meant for a fresh process: see
    speed_subprocess."""
    import statistics

    if prompt_tokens < 1 or new_tokens < 2 or repeats < 1:
        raise EvaluationError("speed needs prompt_tokens >= 1, new_tokens >= 2 and repeats >= 1")
    genai, _ = _read_folder(Path(folder))
    context = int(genai["model"].get("context_length") or 0)
    max_length = prompt_tokens + new_tokens
    if context and max_length > context:
        raise EvaluationError(f"speed: {prompt_tokens} prompt + {new_tokens} new tokens exceed the context ({context})")

    import numpy as np
    import onnxruntime_genai as og

    rss_before = peak_rss_mb()
    t = time.perf_counter()
    model = og.Model(str(folder))
    load_s = time.perf_counter() - t
    tokenizer = og.Tokenizer(model)
    corpus = np.asarray(tokenizer.encode(CORPUS.read_text(encoding="utf-8")), dtype=np.int32)
    prompt = np.resize(corpus, prompt_tokens)  # the corpus, repeated if it is too short

    # One warm-up, then at least `repeats` runs and at least MIN_MEASURED_S of them: a tiny
    # model's run takes milliseconds, and three of those are mostly scheduler noise.
    runs, measured, min_runs = [], 0.0, repeats + 1
    while len(runs) < min_runs or (measured < MIN_MEASURED_S and len(runs) <= MAX_RUNS):
        params = og.GeneratorParams(model)
        # min_length = max_length: eos cannot end a run early, every run decodes new_tokens.
        params.set_search_options(max_length=max_length, min_length=max_length, do_sample=False)
        generator = og.Generator(model, params)
        t0 = time.perf_counter()
        generator.append_tokens(prompt)
        t1 = time.perf_counter()
        generator.generate_next_token()
        t2 = time.perf_counter()
        decoded = 0
        while not generator.is_done():
            generator.generate_next_token()
            decoded += 1
        t3 = time.perf_counter()
        runs.append({"ttft": t2 - t0, "prompt": prompt_tokens / (t1 - t0),
                     "decode": decoded / (t3 - t2) if decoded else None})
        measured += (t3 - t0) if len(runs) > 1 else 0.0
        del generator
    runs = runs[1:]
    peak = peak_rss_mb()
    threads = (genai["model"]["decoder"].get("session_options") or {}).get("intra_op_num_threads")
    decode = [r["decode"] for r in runs if r["decode"]]
    return {
        "time_to_first_token_s": statistics.median(r["ttft"] for r in runs),
        "prompt_tokens_per_s": statistics.median(r["prompt"] for r in runs),
        "decode_tokens_per_s": statistics.median(decode) if decode else None,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "max_length": max_length,
        "repeats": repeats,
        "runs": len(runs),
        "load_s": load_s,
        "peak_rss_mb": peak,
        "rss_before_load_mb": rss_before,
        "model_rss_mb": peak - rss_before,
        "intra_op_num_threads": threads,
        "process_threads": _process_threads(),
        "cpu_count": os.cpu_count(),
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB. On Linux VmHWM, the high-water mark
    of this program's own memory: ru_maxrss is not, since after fork + exec it still holds the
    parent's RSS at the fork (411 MB measured here for a child whose own peak was 72 MB)."""
    hwm = _proc_status("VmHWM")
    if hwm is not None:
        return hwm / 1024  # kB
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB elsewhere


def _process_threads() -> int | None:
    return _proc_status("Threads")


def _proc_status(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


# ---------------------------------------------------------------------------------------------
# Checks


def apply_checks(metrics: dict, checks: dict[str, float]) -> list[CheckResult]:
    """Hold `metrics` to `checks` ({name in CHECKS: threshold}). A metric that was not measured
    fails, saying which section is missing and why."""
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise EvaluationError(f"unknown check {', '.join(unknown)} (known: {', '.join(CHECKS)})")
    results = []
    for name, threshold in checks.items():
        path, kind = CHECKS[name]
        measured = _lookup(metrics, path)
        if measured is None:
            message = f"{name}: not measured ({path}): {_why_missing(metrics, path)}"
            results.append(CheckResult(name, path, None, threshold, False, message))
            continue
        passed = measured <= threshold if kind == "max" else measured >= threshold
        op = ("<=" if passed else ">") if kind == "max" else (">=" if passed else "<")
        message = f"{name}: measured {_fmt(measured)} {op} threshold {_fmt(threshold)} ({path})"
        results.append(CheckResult(name, path, float(measured), threshold, passed, message))
    return results


def _lookup(metrics: dict, path: str):
    node = metrics
    for key in path.split("."):
        if not isinstance(node, dict) or node.get(key) is None:
            return None
        node = node[key]
    return node if isinstance(node, (int, float)) else None


def _why_missing(metrics: dict, path: str) -> str:
    skipped = metrics.get("skipped") or {}
    section = path.split(".")[0]
    if section not in metrics:
        why = skipped.get(section) or skipped.get(path)
        return f"section '{section}' is missing" + (f": {why}" if why else "")
    why = skipped.get(path) or skipped.get(section)
    return f"'{path}' is missing" + (f": {why}" if why else "")


def _fmt(x: float) -> str:
    return f"{x:.6g}"


# ---------------------------------------------------------------------------------------------
# `python -m pipeline.evaluate --speed-only FOLDER --json`: the speed run in a fresh process.
# Imports here stay light (no torch, no transformers): they would count in the peak RSS.


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate",
                                     description="Speed of a built folder in this fresh process "
                                                 "(the full evaluation is `pipeline eval FOLDER`).")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--speed-only", action="store_true", required=True)
    parser.add_argument("--json", action="store_true", help="print the speed metrics as JSON")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        result = measure_speed(args.folder, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens,
                               repeats=args.repeats)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
