"""Deterministic tiny chat models for tests: a real tokenizer, random weights, a real chat template.

    python -m pipeline.tiny models/tiny-qwen2-chat            # regenerate the shipped copy
    python -m pipeline.tiny /tmp/tiny --family qwen2 --seed 1

The folder is what `AutoModelForCausalLM.from_pretrained` and the onnxruntime-genai model
builder expect from a Hugging Face checkpoint. The weights are random: the model is only good
for testing the pipeline (export, quantization, packaging, greedy parity), never for text.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "corpus.txt"

# Qwen2's own pre-tokenizer split (transformers' Qwen2Tokenizer.PRETOKENIZE_REGEX), so our
# tokenizer.json has the structure runtimes expect of a Qwen2 tokenizer.
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


@dataclass(frozen=True)
class Family:
    """What differs between model families: architecture, special tokens, chat template."""

    config_class: str  # transformers class names, imported when used
    model_class: str
    tokenizer_class: str  # the class the real model's tokenizer_config.json names
    special_tokens: tuple[str, ...]  # appended after the BPE vocabulary, in this order
    bos_token: str | None  # what the tokenizer adds in front (None: nothing)
    config_bos: str  # config.json's bos_token_id, which need not be added by the tokenizer
    eos_token: str  # the end of an assistant turn
    pad_token: str
    generation_eos: tuple[str, ...]  # every token that ends generation (generation_config)
    chat_template: str  # file name under pipeline/data/chat_templates/
    pretokenize_regex: str


FAMILIES: dict[str, Family] = {
    "qwen2": Family(
        config_class="Qwen2Config",
        model_class="Qwen2ForCausalLM",
        tokenizer_class="Qwen2Tokenizer",
        special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        bos_token=None,
        config_bos="<|endoftext|>",  # as Qwen2.5's config.json (151643)
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        generation_eos=("<|im_end|>", "<|endoftext|>"),
        chat_template="qwen2.5-instruct.jinja",
        pretokenize_regex=QWEN2_PRETOKENIZE_REGEX,
    ),
}

# The smallest shape the onnxruntime-genai builder accepts: GroupQueryAttention needs
# head_dim (128 / 4 = 32) a multiple of 16, and vocab_size must differ from the hidden and
# intermediate sizes. About 2.3 MB of fp32 weights.
BPE_VOCAB_SIZE = 1024
SHAPE = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)
# Weight spread, measured on fp32 builds over 8 chat prompts x 16 greedy tokens: at the usual
# 0.02 the logits are nearly flat (smallest top-1/top-2 gaps 0.000-0.005, near-ties for a
# parity test). At 0.3, 15-16 of 16 tokens differ, the median gap is 0.64-0.75, the smallest
# 0.004, and the largest ONNX-vs-torch logit error 1.1e-4. Wider spreads (0.5, 1.0) grow that
# error faster than the gaps.
INITIALIZER_RANGE = 0.3


def get_family(name: str) -> Family:
    """The family called `name`; ValueError listing the supported ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(
            f"Model family {name!r} is not supported (supported: {', '.join(sorted(FAMILIES))})"
        ) from None


def chat_template(family: str = "qwen2") -> str:
    """The chat template text the family's tiny model ships (the real upstream template)."""
    return _template_text(get_family(family))


def _template_text(fam: Family) -> str:
    return (DATA / "chat_templates" / fam.chat_template).read_text(encoding="utf-8")


def make_tiny_model(out_dir: Path, *, family: str = "qwen2", seed: int = 0) -> Path:
    """Write a complete Hugging Face model folder to `out_dir` and return it.

    Same family and seed give byte-identical tokenizer.json and model.safetensors. Files of a
    previous generation in `out_dir` are overwritten.
    """
    fam = get_family(family)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(fam)
    _save_tokenizer(tokenizer, fam, out_dir)
    _save_model(fam, tokenizer, seed, out_dir)
    return out_dir


def train_tokenizer(fam: Family):
    """A byte-level BPE `tokenizers.Tokenizer` trained on the corpus, special tokens last.

    The trainer is deterministic (checked across processes and with parallelism on or off):
    merges are ordered by count, ties by pair id, and ids come from the sorted byte alphabet.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
    from tokenizers import pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(fam.pretokenize_regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(
        add_prefix_space=False, trim_offsets=False, use_regex=False
    )
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable, no unk
        special_tokens=[],
        show_progress=False,
    )
    paragraphs = CORPUS.read_text(encoding="utf-8").split("\n\n")
    tok.train_from_iterator(paragraphs, trainer)
    # Special tokens after the vocabulary, as in Qwen2 (151643, 151644, 151645 there).
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in fam.special_tokens])
    return tok


def _save_tokenizer(tok, fam: Family, out_dir: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    template = _template_text(fam)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=fam.bos_token,
        eos_token=fam.eos_token,
        pad_token=fam.pad_token,
        unk_token=None,
        model_max_length=SHAPE["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )
    hf.chat_template = template
    hf.save_pretrained(out_dir)  # tokenizer.json, tokenizer_config.json, chat_template.jinja

    # transformers 5 writes its generic class name ("TokenizersBackend"), which transformers 4
    # cannot load, and keeps the template only in chat_template.jinja, which older loaders do
    # not read. Write what Qwen2.5 ships: Qwen2Tokenizer, the template in the config too.
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.pop("backend", None)
    config.update(
        tokenizer_class=fam.tokenizer_class,
        add_bos_token=False,
        add_prefix_space=False,
        bos_token=fam.bos_token,
        eos_token=fam.eos_token,
        pad_token=fam.pad_token,
        unk_token=None,
        errors="replace",
        split_special_tokens=False,
        additional_special_tokens=[t for t in fam.special_tokens if t != fam.pad_token],
        chat_template=template,
    )
    _write_json(config_path, config)
    _write_json(
        out_dir / "special_tokens_map.json",
        {
            "additional_special_tokens": config["additional_special_tokens"],
            "eos_token": fam.eos_token,
            "pad_token": fam.pad_token,
        },
    )


def _save_model(fam: Family, tok, seed: int, out_dir: Path) -> None:
    import torch
    import transformers

    ids = {t: tok.token_to_id(t) for t in fam.special_tokens}
    config = getattr(transformers, fam.config_class)(
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        **SHAPE,
        initializer_range=INITIALIZER_RANGE,
        tie_word_embeddings=False,
        bos_token_id=ids[fam.config_bos],
        eos_token_id=ids[fam.eos_token],
    )
    torch.manual_seed(seed)
    model = getattr(transformers, fam.model_class)(config).to(torch.float32).eval()
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=[ids[t] for t in fam.generation_eos],
        pad_token_id=ids[fam.pad_token],
    )
    model.save_pretrained(out_dir)  # config.json, generation_config.json, model.safetensors


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tiny", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--family", default="qwen2", choices=sorted(FAMILIES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = make_tiny_model(args.out_dir, family=args.family, seed=args.seed)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
