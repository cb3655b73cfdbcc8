"""`model-builder`: convert a Hugging Face model folder to an ONNX Runtime GenAI folder with
onnxruntime-genai's model builder.

The builder runs as a subprocess (`python -m onnxruntime_genai.models.builder`): its Python
signature changes between releases, the CLI does not, and a crash or memory blow-up in it cannot
take the runner down with it. It always runs offline and without a token: the source has already
been resolved to a local folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from pipeline.errors import PassError
from pipeline.passes import Artifact, Context, register

# Our recipe names -> the builder's --extra_options names (0.15+ spelling); int4 and int8.
_QUANT_OPTIONS = {"block_size": "block_size", "accuracy_level": "accuracy_level",
                 "symmetric": "is_symmetric", "algorithm": "algo_config"}
_HEARTBEAT_S = 15.0


def builder_command(src: Path, out: Path, config: dict, ctx: Context) -> list[str]:
    """The exact builder command line for this pass (recorded in build.json)."""
    options: dict[str, object] = {"hf_token": "false",
                                  "hf_remote": "true" if ctx.model.get("trust_remote_code") else "false",
                                  # The window-sized KV cache 0.18 writes for sliding-window layers
                                  # (cache_slack, GQA sliding_window_cache) does not load in Foundry
                                  # Local's runtime; the full-size cache computes the same thing.
                                  "windowed_kv_cache": "false"}
    if config["precision"] in ("int4", "int8"):
        for ours, theirs in _QUANT_OPTIONS.items():
            if config.get(ours) is not None:
                options[theirs] = config[ours]
    options.update(config.get("extra_options") or {})
    rendered = [f"{k}={_flag(v)}" for k, v in options.items()]
    return [sys.executable, "-m", "onnxruntime_genai.models.builder",
            "-i", str(src), "-o", str(out), "-p", config["precision"],
            "-e", ctx.target["execution_provider"], "-c", str(ctx.workdir / "builder-cache"),
            "--extra_options", *rendered]


def _flag(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


@register("model-builder", version="2", consumes="hf-model", produces="onnx-genai")
def model_builder(artifact: Artifact, config: dict, ctx: Context) -> Artifact:
    out = ctx.workdir / "out"
    cmd = builder_command(artifact.path, out, config, ctx)
    ctx.logdir.mkdir(parents=True, exist_ok=True)
    log_path = ctx.logdir / f"model-builder-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    rc, tail = _run_logged(cmd, env, log_path, ctx)
    if rc != 0:
        raise PassError("model-builder", f"the onnxruntime-genai builder failed (exit {rc}): {_reason(tail)}"
                        f"\n  full log: {log_path}")
    if not (out / "genai_config.json").is_file():
        raise PassError("model-builder", f"the builder finished but wrote no genai_config.json; full log: {log_path}")
    log_path.unlink(missing_ok=True)  # kept only to explain failures
    return Artifact(out, "onnx-genai", {"precision": config["precision"], "command": cmd})


def _run_logged(cmd: list[str], env: dict, log_path: Path, ctx: Context) -> tuple[int, list[str]]:
    """Run `cmd`, writing everything it prints to `log_path`; say every few seconds that it is
    still working (builds of real models take minutes). Returns exit code and the last lines."""
    tail: deque[str] = deque(maxlen=40)
    start = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                text=True, errors="replace", bufsize=1)
        done = threading.Event()

        def heartbeat() -> None:
            while not done.wait(_HEARTBEAT_S):
                last = tail[-1].strip()[:100] if tail else ""
                ctx.log(f"still building ({time.monotonic() - start:.0f}s) {last}")

        beat = threading.Thread(target=heartbeat, daemon=True)
        beat.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log_file.write(line)
                # tqdm redraws with \r; keep the newest state of each line.
                tail.append(line.rsplit("\r", 1)[-1])
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            done.set()
    return rc, list(tail)


def _reason(tail: list[str]) -> str:
    """The most telling line of a failed builder run: the exception line if there is one."""
    lines = [l.strip() for l in tail if l.strip()]
    for line in reversed(lines):
        if "Error" in line.split(":", 1)[0] or line.startswith(("NotImplementedError", "ValueError", "OSError")):
            return line[:500]
    return lines[-1][:500] if lines else "no output"
