"""A random-weight model with the shape of Qwen2.5-0.5B-Instruct, generated here (no download).

    .venv/bin/python benchmarks/shaped.py            # make (or reuse) benchmarks/.work/qwen2.5-0.5b-shaped

Same architecture and sizes as the real model (config.json of Qwen/Qwen2.5-0.5B-Instruct: hidden
896, 24 layers, 14 attention heads and 2 KV heads of 64, intermediate 4864, vocabulary 151936,
tied embeddings, bf16 weights, about 494 M parameters, 0.99 GB), so what the builder and ONNX
Runtime do with it (bytes moved, time spent) is what they do with the real one. The tokenizer is
the tiny Qwen2 family's (pipeline.tiny): ids above its 1 k vocabulary are never produced, which
changes nothing for timing. Random weights: the model says nothing; its speed is what counts.

Deterministic (seed 0) and made once: the folder carries a stamp of the generator's settings and
is reused while the stamp matches. About 30 s and 3 GB of RAM on 2 cores.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work"
NAME = "qwen2.5-0.5b-shaped"

# From Qwen/Qwen2.5-0.5B-Instruct's config.json (revision 7ae557604adf67be50417f59c2c2f167def9a775).
QWEN05B_SHAPE = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "vocab_size": 151936,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
SEED = 0
STAMP = "shaped.json"
_GENERATOR_VERSION = 1


def stamp() -> dict:
    return {"generator_version": _GENERATOR_VERSION, "shape": QWEN05B_SHAPE, "seed": SEED, "dtype": "bfloat16"}


def qwen05b_shaped(dest: Path | None = None, *, log=print) -> Path:
    """The Qwen2.5-0.5B-shaped folder, made if missing or made with other settings."""
    dest = Path(dest) if dest is not None else WORK / NAME
    stamp_file = dest / STAMP
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp():
        return dest
    import torch
    import transformers

    from pipeline import tiny

    t0 = time.perf_counter()
    log(f"making {dest} (Qwen2.5-0.5B shape, random weights; once, about 30 s)")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fam = tiny.get_family("qwen2")
    tok = tiny.train_tokenizer(fam)
    tiny.save_tokenizer(tok, fam, tmp)
    ids = {t: tok.token_to_id(t) for t in fam.special_tokens + fam.added_tokens}
    config = transformers.Qwen2Config(
        **QWEN05B_SHAPE,
        initializer_range=0.02,
        bos_token_id=ids[fam.config_bos],
        eos_token_id=ids[fam.eos_token],
        **dict(fam.config_extra),
        **{key: ids[token] for key, token in fam.config_token_ids},
    )
    torch.manual_seed(SEED)
    with torch.no_grad():
        model = transformers.Qwen2ForCausalLM(config).to(torch.bfloat16).eval()
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=[ids[t] for t in fam.generation_eos],
        pad_token_id=ids[fam.pad_token] if fam.pad_token else None)
    model.save_pretrained(tmp)
    (tmp / STAMP).write_text(json.dumps(stamp(), indent=2, sort_keys=True) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    params = sum(p.numel() for p in model.parameters())
    log(f"made {dest}: {params / 1e6:.0f} M parameters in {time.perf_counter() - t0:.0f} s")
    return dest


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(qwen05b_shaped())
