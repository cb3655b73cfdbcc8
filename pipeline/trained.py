"""A small Qwen2 chat model trained here on public-domain text, so that perplexity means something.

    python -m pipeline.trained models/tiny-qwen2-trained      # regenerate the shipped copy
    python -m pipeline.trained /tmp/trained --steps 20        # a quick smoke run

The random-weight models of `pipeline.tiny` cannot show what quantization costs: their logits
carry no knowledge to lose. This one is trained for under a minute on two CPU cores, from
scratch, on the text under pipeline/data/, and its perplexity on held-out text
(pipeline/data/heldout.txt, never trained on, not even by the tokenizer) is the number that
quantized builds of it are compared against.

Its tokenizer, special tokens and chat template are those of the qwen2 tiny model (pipeline.tiny:
byte-level BPE trained on corpus.txt, Qwen2.5-Instruct's chat template); only the weights are
learned. Training is deterministic: the same seed, steps, torch version and machine give
bit-identical weights (torch.use_deterministic_algorithms, a fixed thread count).

Text: every section of the training files (a title line, a blank line, the text; sections are
separated by two blank lines) enters the training stream twice: as plain text followed by
<|endoftext|>, and as a chat in which the user names the piece (the title without its
"(author, year)") and the assistant answers with the whole section (Qwen2.5's template with its
default system prompt), so that chat prompts get answers in the corpus's English that end with
<|im_end|>. Each step trains on random 512-token windows of that stream.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

from pipeline import tiny

DATA = tiny.DATA
TRAIN_FILES = (tiny.CORPUS, DATA / "train-extra.txt")
HELDOUT = DATA / "heldout.txt"
FAMILY = "qwen2"

# Qwen2ForCausalLM as small as the builder allows in head_dim and kv heads, wide enough to learn
# the corpus in a minute. vocab_size (1027) differs from hidden and intermediate, as the builder
# requires.
SHAPE = {
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}
INITIALIZER_RANGE = 0.02
# Training windows as long as the context (max_position_embeddings): a model trained on shorter
# windows scores worse on longer ones (trained on 128: held-out perplexity +6% at 256, +17% at 512).
SEQ_LEN = 512
BATCH_SIZE = 4  # 2048 tokens a step
# Held-out and train perplexity as `pipeline eval` measures it by default (pipeline.evaluate's
# window and stride), so that training.json and an evaluate pass report comparable numbers.
EVAL_WINDOW = 256
EVAL_STRIDE = 128
STEPS = 300  # held-out loss levels off about here (~65k training tokens): 400 steps gain 1.6%
LR = 3e-3
MIN_LR = 3e-4  # cosine decay ends here
WARMUP_STEPS = 20
WEIGHT_DECAY = 0.1
BETAS = (0.9, 0.95)
GRAD_CLIP = 1.0
THREADS = 2  # fixed: a different count changes the float sums, hence the weights


def sections(text: str) -> list[tuple[str, str]]:
    """(title, body) of each section of a data file."""
    out = []
    for part in text.strip().split("\n\n\n"):
        title, _, body = part.strip().partition("\n\n")
        out.append((title.strip(), body.strip()))
    return out


def heldout_ids(tokenizer) -> list[int]:
    """Token ids of pipeline/data/heldout.txt, the whole file encoded at once without special
    tokens, as `pipeline eval` encodes it. `tokenizer` is a `tokenizers.Tokenizer` or a
    transformers tokenizer."""
    return _encode(tokenizer, HELDOUT.read_text(encoding="utf-8"))


def perplexity(model, ids: list[int], *, window: int = EVAL_WINDOW, stride: int = EVAL_STRIDE,
               batch_size: int = 16) -> tuple[float, float, int]:
    """(mean loss in nats per token, perplexity, tokens scored) of a transformers causal LM over
    `ids`, with pipeline.evaluate's sliding windows: every token but the first is scored once."""
    import torch

    from pipeline.evaluate import sliding_windows

    by_length: dict[int, list[tuple[int, int, int]]] = {}  # windows of one length run as a batch
    for begin, end, first in sliding_windows(len(ids), window, stride):
        by_length.setdefault(end - begin, []).append((begin, end, first))
    total, count = 0.0, 0
    with torch.no_grad():
        for spans in by_length.values():
            for i in range(0, len(spans), batch_size):
                batch = spans[i:i + batch_size]
                x = torch.tensor([ids[begin:end] for begin, end, _ in batch])
                logp = torch.log_softmax(model(input_ids=x).logits.float(), dim=-1)
                for row, (begin, end, first) in enumerate(batch):
                    targets = torch.tensor(ids[first:end])[:, None]
                    total -= logp[row, first - begin - 1:end - begin - 1].gather(1, targets).sum().item()
                    count += len(targets)
    mean = total / count
    return mean, math.exp(mean), count


def make_trained_model(out_dir: Path, *, steps: int = STEPS, seed: int = 0, log=print) -> dict:
    """Train the model and write a complete Hugging Face folder to `out_dir`: the qwen2 tiny
    model's tokenizer files and chat template, config.json, generation_config.json,
    model.safetensors, and training.json (the recipe of this training and its results).

    Returns the results: train and held-out loss (nats per token) and perplexity, the held-out
    perplexity of a unigram model of the training text (the bar to clear), and timings.
    """
    import tokenizers
    import torch
    import transformers
    from transformers import AutoTokenizer

    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fam = tiny.get_family(FAMILY)
    tok = tiny.train_tokenizer(fam)
    tiny.save_tokenizer(tok, fam, out_dir)
    chat = AutoTokenizer.from_pretrained(out_dir)  # renders the chat template

    plain, chats = [], []
    eot = tok.token_to_id("<|endoftext|>")
    for path in TRAIN_FILES:
        for title, body in sections(path.read_text(encoding="utf-8")):
            section = f"{title}\n\n{body}"
            plain += _encode(tok, section) + [eot]
            request = title.split(" (")[0]  # the name without "(author, year)"
            rendered = chat.apply_chat_template(
                [{"role": "user", "content": request}, {"role": "assistant", "content": section}], tokenize=False)
            chats += _encode(tok, rendered)
    stream = torch.tensor(plain + chats)
    heldout = heldout_ids(tok)

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    try:
        model = tiny.new_model(fam, tok, seed=seed, shape=SHAPE, initializer_range=INITIALIZER_RANGE)
        train_start = time.perf_counter()
        _train(model, stream, steps=steps, seed=seed, log=log)
        train_seconds = time.perf_counter() - train_start
        model.eval()
        train_loss, train_ppl, _ = perplexity(model, plain)
        heldout_loss, heldout_ppl, _ = perplexity(model, heldout)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    model.save_pretrained(out_dir)

    results = {
        "train_loss": round(train_loss, 4),
        "train_perplexity": round(train_ppl, 3),
        "heldout_loss": round(heldout_loss, 4),
        "heldout_perplexity": round(heldout_ppl, 3),
        "heldout_unigram_perplexity": round(_unigram_perplexity(plain, heldout, len(tok.get_vocab())), 3),
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    record = {
        "command": f"python -m pipeline.trained {out_dir.as_posix()}"
                   + (f" --steps {steps}" if steps != STEPS else "") + (f" --seed {seed}" if seed else ""),
        "seed": seed,
        "steps": steps,
        "batch_size": BATCH_SIZE,
        "seq_len": SEQ_LEN,
        "eval": {"window": EVAL_WINDOW, "stride": EVAL_STRIDE},
        "optimizer": {"name": "AdamW", "lr": LR, "betas": list(BETAS), "weight_decay": WEIGHT_DECAY,
                      "grad_clip": GRAD_CLIP},
        "schedule": {"warmup_steps": WARMUP_STEPS, "decay": "cosine", "min_lr": MIN_LR},
        "threads": THREADS,
        "data": {
            "train": {_rel(p): _file_digest(p) for p in TRAIN_FILES},
            "heldout": {_rel(HELDOUT): _file_digest(HELDOUT)},
            "train_tokens": {"plain": len(plain), "chat": len(chats)},
            "heldout_tokens": len(heldout),
        },
        "results": results,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__},
    }
    (out_dir / "training.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return results


def _train(model, stream, *, steps: int, seed: int, log) -> None:
    """AdamW on random windows of `stream`, linear warmup then cosine decay; logs progress."""
    import torch
    import torch.nn.functional as F

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]  # RMSNorm weights
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=BETAS)
    windows = torch.Generator().manual_seed(seed)
    model.train()
    start, recent = time.perf_counter(), []
    every = max(1, steps // 10)
    for step in range(1, steps + 1):
        lr = _lr(step, steps)
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, len(stream) - SEQ_LEN - 1, (BATCH_SIZE,), generator=windows)
        batch = torch.stack([stream[s:s + SEQ_LEN + 1] for s in starts.tolist()])
        logits = model(input_ids=batch[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        recent.append(loss.item())
        if step % every == 0 or step == steps:
            log(f"step {step:4d}/{steps}  loss {sum(recent) / len(recent):.3f}  lr {lr:.1e}  "
                f"{time.perf_counter() - start:5.1f}s")
            recent = []


def _lr(step: int, steps: int) -> float:
    if step <= WARMUP_STEPS:
        return LR * step / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, steps - WARMUP_STEPS)
    return MIN_LR + (LR - MIN_LR) * 0.5 * (1 + math.cos(math.pi * progress))


def _unigram_perplexity(train: list[int], test: list[int], vocab: int) -> float:
    """Perplexity on test[1:] of token frequencies in `train` (add-one smoothing)."""
    from collections import Counter

    counts, total = Counter(train), len(train) + vocab
    nll = -sum(math.log((counts[t] + 1) / total) for t in test[1:])
    return math.exp(nll / (len(test) - 1))


def _encode(tokenizer, text: str) -> list[int]:
    # A transformers tokenizer's own backend: the same ids, without its warning about texts longer
    # than model_max_length.
    tokenizer = getattr(tokenizer, "backend_tokenizer", tokenizer)
    return tokenizer.encode(text, add_special_tokens=False).ids


def _file_digest(path: Path) -> dict:
    data = path.read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _rel(path: Path) -> str:
    return path.relative_to(DATA.parent.parent).as_posix()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.trained", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results = make_trained_model(args.out_dir, steps=args.steps, seed=args.seed)
    print(f"held-out perplexity {results['heldout_perplexity']:.2f} "
          f"(unigram {results['heldout_unigram_perplexity']:.2f}, train {results['train_perplexity']:.2f}); "
          f"trained in {results['train_seconds']:.1f}s, {results['wall_seconds']:.1f}s in all")
    print(f"wrote {args.out_dir}")


if __name__ == "__main__":
    main()
