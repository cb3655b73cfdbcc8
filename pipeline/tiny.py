"""Deterministic tiny chat models for tests: a real tokenizer, random weights, a real chat template.

    python -m pipeline.tiny models/tiny-qwen2-chat            # regenerate the shipped copy
    python -m pipeline.tiny /tmp/tiny --family qwen2 --seed 1

The folder is what `AutoModelForCausalLM.from_pretrained` and the onnxruntime-genai model
builder expect from a Hugging Face checkpoint. The weights are random: the model is only good
for testing the pipeline (export, quantization, packaging, greedy parity), never for text.

Each family imitates one real model's chat side: its chat template byte for byte, its special
tokens, which of them the tokenizer treats as bos/eos/pad/unk, and whether its tokenizer adds bos
when encoding (tokenizer_config.json add_bos_token and the tokenizer.json post-processor). The
vocabulary itself is always our small byte-level BPE, and the architecture is the real one where
the onnxruntime-genai builder builds it at this size.

Chat templates under pipeline/data/chat_templates/, copied by program (never retyped) from:
- qwen2.5-instruct.jinja: Qwen/Qwen2.5-7B-Instruct, ggml-org/llama.cpp
  models/templates/Qwen-Qwen2.5-7B-Instruct.jinja.
- chatml.jinja, phi3.jinja, phi4-mini.jinja, llama3.jinja, mistral-v0.2.jinja, gemma.jinja,
  deepseek-r1.jinja: see pipeline.packaging.templates.TEMPLATE_FAMILIES (model and source).
- smollm3.jinja: HuggingFaceTB/SmolLM3-3B, microsoft/onnxruntime-extensions (at
  319f8d2c02c4e2f013129bea52e70e75ba79bbcf) test/data/v5/smollm3/chat_template.jinja.
- phi-3-mini-4k-instruct.jinja: microsoft/Phi-3-mini-4k-instruct, onnxruntime-extensions
  test/data/phi-3-mini/tokenizer_config.json "chat_template" (equal to the copy guidance-ai/guidance
  records, tests/data/chat_templates/).
- llama-3.1-instruct.jinja: meta-llama/Llama-3.1-8B-Instruct, ggml-org/llama.cpp
  models/templates/meta-llama-Llama-3.1-8B-Instruct.jinja.
- gemma-2-it.jinja: google/gemma-2-2b-it, ggml-org/llama.cpp models/templates/google-gemma-2-2b-it.jinja
  (equal to onnxruntime-extensions test/data/gemma/tokenizer_config.json "chat_template").
The llama.cpp files were read from its fork ye-NX/llama.cpp at 1eeb523c3e0c7ffbd59469f5463dcbdecba3535e;
llama.cpp writes them with scripts/get_chat_template.py from the Hugging Face repositories.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
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
    bos_token: str | None  # the tokenizer's bos_token (None: it has none)
    config_bos: str  # config.json's bos_token_id, which need not be added by the tokenizer
    eos_token: str  # the end of an assistant turn
    pad_token: str | None
    generation_eos: tuple[str, ...]  # every token that ends generation (generation_config)
    chat_template: str  # file name under pipeline/data/chat_templates/
    pretokenize_regex: str
    model: str = ""  # the Hugging Face model whose tokenizer and template this imitates
    unk_token: str | None = None
    added_tokens: tuple[str, ...] = ()  # non-special added tokens (e.g. <think>), after special_tokens
    add_bos_token: bool | None = False  # tokenizer_config.json's add_bos_token; None: key absent
    post_processor_bos: bool = False  # tokenizer.json's post-processor prepends bos_token
    tokenizer_config_extra: tuple[tuple[str, object], ...] = ()
    config_extra: tuple[tuple[str, object], ...] = ()  # config.json values beyond SHAPE
    config_token_ids: tuple[tuple[str, str], ...] = ()  # config.json ids given as tokens


QWEN_TOKENIZER_CONFIG = (("add_prefix_space", False), ("errors", "replace"), ("split_special_tokens", False))
LLAMA3_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                 "<|eot_id|>", "<|eom_id|>", "<|python_tag|>")
PHI3_TOKENS = ("<unk>", "<s>", "</s>", "<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>")
GEMMA_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")
# Gemma's tokenizer_config.json names GemmaTokenizer, which transformers 5 rebuilds from the vocabulary
# as SentencePiece-style BPE; ours is byte-level, so the Gemma families name the generic class.
# Gemma 2/3 need an explicit head_dim (their default is 256) and attention scaling to match it.
# Their sliding window must fit the KV cache of a short generation (the runtime checks).
GEMMA_SHAPE = (("head_dim", 32), ("query_pre_attn_scalar", 32), ("sliding_window", 16))
# Phi-3 with max_position_embeddings != original_max_position_embeddings is LongRoPE; keep it plain.
PHI3_SHAPE = (("original_max_position_embeddings", 512),)

FAMILIES: dict[str, Family] = {
    "qwen2": Family(
        model="Qwen/Qwen2.5-0.5B-Instruct",
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
        tokenizer_config_extra=QWEN_TOKENIZER_CONFIG,
    ),
    "qwen3": Family(
        model="Qwen/Qwen3-0.6B",
        config_class="Qwen3Config",
        model_class="Qwen3ForCausalLM",
        tokenizer_class="Qwen2Tokenizer",
        special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        added_tokens=("<think>", "</think>"),  # not special in Qwen3 either
        bos_token=None,
        config_bos="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        generation_eos=("<|im_end|>", "<|endoftext|>"),
        chat_template="chatml.jinja",
        pretokenize_regex=QWEN2_PRETOKENIZE_REGEX,
        tokenizer_config_extra=QWEN_TOKENIZER_CONFIG,
        config_extra=(("head_dim", 32),),
    ),
    "smollm3": Family(
        model="HuggingFaceTB/SmolLM3-3B",
        config_class="SmolLM3Config",
        model_class="SmolLM3ForCausalLM",
        tokenizer_class="PreTrainedTokenizerFast",
        special_tokens=("<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"),
        added_tokens=("<think>", "</think>"),
        bos_token=None,  # SmolLM3's tokenizer_config.json: "bos_token": null
        config_bos="<|begin_of_text|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        generation_eos=("<|im_end|>",),
        chat_template="smollm3.jinja",
        pretokenize_regex=QWEN2_PRETOKENIZE_REGEX,
        add_bos_token=None,
        config_token_ids=(("pad_token_id", "<|im_end|>"),),
    ),
    "phi3": Family(
        model="microsoft/Phi-3-mini-4k-instruct",
        config_class="Phi3Config",
        model_class="Phi3ForCausalLM",
        tokenizer_class="LlamaTokenizer",
        special_tokens=PHI3_TOKENS,
        bos_token="<s>",  # named, but Phi-3 adds none (add_bos_token false, no bos in the post-processor)
        config_bos="<s>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        generation_eos=("<|endoftext|>", "<|assistant|>", "<|end|>"),
        chat_template="phi-3-mini-4k-instruct.jinja",
        pretokenize_regex=QWEN2_PRETOKENIZE_REGEX,
        config_extra=PHI3_SHAPE,
        config_token_ids=(("pad_token_id", "<|endoftext|>"),),
    ),
    "phi4-mini": Family(
        model="microsoft/Phi-4-mini-instruct",
        config_class="Phi3Config",
        model_class="Phi3ForCausalLM",
        tokenizer_class="GPT2Tokenizer",
        special_tokens=("<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|tool|>",
                        "<|/tool|>"),
        bos_token="<|endoftext|>",  # bos, eos, pad and unk are all <|endoftext|> in Phi-4-mini
        config_bos="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        generation_eos=("<|end|>", "<|endoftext|>"),
        chat_template="phi4-mini.jinja",
        pretokenize_regex=QWEN2_PRETOKENIZE_REGEX,
        config_extra=PHI3_SHAPE,
        config_token_ids=(("pad_token_id", "<|endoftext|>"),),
    ),
    "llama3.1": Family(
        model="meta-llama/Llama-3.1-8B-Instruct",
        config_class="LlamaConfig",
        model_class="LlamaForCausalLM",
        tokenizer_class="PreTrainedTokenizerFast",
        special_tokens=LLAMA3_TOKENS,
        bos_token="<|begin_of_text|>",
        config_bos="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token=None,
        generation_eos=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
        chat_template="llama-3.1-instruct.jinja",
        pretokenize_regex=QWEN2_PRETOKENIZE_REGEX,
        add_bos_token=None,  # Llama 3 says nothing; its post-processor adds <|begin_of_text|>
        post_processor_bos=True,
    ),
    "mistral-v0.2": Family(
        model="mistralai/Mistral-7B-Instruct-v0.2",
        config_class="MistralConfig",
        model_class="MistralForCausalLM",
        tokenizer_class="LlamaTokenizer",
        special_tokens=("<unk>", "<s>", "</s>"),  # [INST] and [/INST] are plain text in v0.2
        bos_token="<s>",
        config_bos="<s>",
        eos_token="</s>",
        pad_token=None,
        unk_token="<unk>",
        generation_eos=("</s>",),
        chat_template="mistral-v0.2.jinja",
        pretokenize_regex=QWEN2_PRETOKENIZE_REGEX,
        add_bos_token=True,
        post_processor_bos=True,
        config_extra=(("sliding_window", None),),
    ),
    "gemma2": Family(
        model="google/gemma-2-2b-it",
        config_class="Gemma2Config",
        model_class="Gemma2ForCausalLM",
        tokenizer_class="PreTrainedTokenizerFast",  # real: GemmaTokenizer (see GEMMA_TOKENS)
        special_tokens=GEMMA_TOKENS,
        bos_token="<bos>",
        config_bos="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        generation_eos=("<eos>", "<end_of_turn>"),
        chat_template="gemma-2-it.jinja",
        pretokenize_regex=QWEN2_PRETOKENIZE_REGEX,
        add_bos_token=True,
        post_processor_bos=True,
        config_extra=GEMMA_SHAPE,
        config_token_ids=(("pad_token_id", "<pad>"),),
    ),
    "deepseek-r1": Family(
        model="deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        config_class="Qwen2Config",
        model_class="Qwen2ForCausalLM",
        tokenizer_class="LlamaTokenizerFast",
        special_tokens=("<｜end▁of▁sentence｜>", "<｜begin▁of▁sentence｜>"),
        added_tokens=("<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"),  # not special there either
        bos_token="<｜begin▁of▁sentence｜>",
        config_bos="<｜begin▁of▁sentence｜>",
        eos_token="<｜end▁of▁sentence｜>",
        pad_token="<｜end▁of▁sentence｜>",
        generation_eos=("<｜end▁of▁sentence｜>",),
        chat_template="deepseek-r1.jinja",
        pretokenize_regex=QWEN2_PRETOKENIZE_REGEX,
        add_bos_token=True,
        post_processor_bos=True,
    ),
}
# Same tokenizer, tokens and architecture as their predecessor; their own chat templates.
FAMILIES["phi3.5"] = replace(FAMILIES["phi3"], model="microsoft/Phi-3.5-mini-instruct", chat_template="phi3.jinja")
FAMILIES["llama3.2"] = replace(FAMILIES["llama3.1"], model="meta-llama/Llama-3.2-1B-Instruct",
                               chat_template="llama3.jinja")
# Gemma 3's tokens and template on Gemma 2's architecture: the builder (0.18) fails on
# transformers 5's Gemma3 config (rope_parameters per layer type: KeyError 'rope_type').
FAMILIES["gemma3"] = replace(FAMILIES["gemma2"], model="google/gemma-3-1b-it", chat_template="gemma.jinja")

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
    save_tokenizer(tokenizer, fam, out_dir)
    new_model(fam, tokenizer, seed=seed).save_pretrained(out_dir)  # config, generation_config, weights
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
    if fam.added_tokens:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in fam.added_tokens])
    if fam.post_processor_bos:
        # As Llama 3, Gemma and Mistral tokenizers do: encoding with special tokens prepends bos.
        bos = fam.bos_token
        tok.post_processor = processors.Sequence([
            tok.post_processor,
            processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                          special_tokens=[(bos, tok.token_to_id(bos))]),
        ])
    return tok


def save_tokenizer(tok, fam: Family, out_dir: Path) -> None:
    """Write `tok` as the family's real model ships it: tokenizer.json, tokenizer_config.json,
    special_tokens_map.json and chat_template.jinja."""
    from transformers import PreTrainedTokenizerFast

    template = _template_text(fam)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=fam.bos_token,
        eos_token=fam.eos_token,
        pad_token=fam.pad_token,
        unk_token=fam.unk_token,
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
    named = {fam.bos_token, fam.pad_token, fam.unk_token}
    config.update(
        tokenizer_class=fam.tokenizer_class,
        bos_token=fam.bos_token,
        eos_token=fam.eos_token,
        pad_token=fam.pad_token,
        unk_token=fam.unk_token,
        additional_special_tokens=[t for t in fam.special_tokens if t not in named],
        chat_template=template,
        **dict(fam.tokenizer_config_extra),
    )
    config.pop("add_bos_token", None)
    if fam.add_bos_token is not None:
        config["add_bos_token"] = fam.add_bos_token
    _write_json(config_path, config)
    tokens_map = {"additional_special_tokens": config["additional_special_tokens"]}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        if getattr(fam, key) is not None:
            tokens_map[key] = getattr(fam, key)
    _write_json(out_dir / "special_tokens_map.json", tokens_map)


def new_model(fam: Family, tok, *, seed: int = 0, shape: dict | None = None,
              initializer_range: float = INITIALIZER_RANGE):
    """A freshly initialised fp32 model of the family (SHAPE unless `shape`) for tokenizer `tok`,
    with the family's special token ids in its config and generation config."""
    import torch
    import transformers

    ids = {t: tok.token_to_id(t) for t in fam.special_tokens + fam.added_tokens}
    config = getattr(transformers, fam.config_class)(
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        **(SHAPE if shape is None else shape),
        initializer_range=initializer_range,
        tie_word_embeddings=False,
        bos_token_id=ids[fam.config_bos],
        eos_token_id=ids[fam.eos_token],
        **dict(fam.config_extra),
        **{key: ids[token] for key, token in fam.config_token_ids},
    )
    torch.manual_seed(seed)
    model = getattr(transformers, fam.model_class)(config).to(torch.float32).eval()
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=[ids[t] for t in fam.generation_eos],
        pad_token_id=ids[fam.pad_token] if fam.pad_token else None,
    )
    return model


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
