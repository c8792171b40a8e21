"""Build the built-in demo model: a tiny random Llama that vLLM for CPU can load.

No hub access: the tokenizer is trained here on a few sentences and the weights are drawn
from a fixed seed, so every machine builds the same model. Shapes follow FACTS.md (CPU
attention needs head_dim >= 32).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A release engineer checks that the model serves on every chip.",
    "The capital of France is Paris. The capital of Italy is Rome.",
    "One, two, three, four, five, six, seven, eight, nine, ten.",
    "Tensor parallel inference splits the weights across devices.",
    "Hello! How are you today? I am fine, thank you.",
    "def add(a, b): return a + b",
    "Large language models predict the next token from the previous ones.",
]
_SPECIAL = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]


def build_demo_model(dest: Path, seed: int = 0) -> Path:
    """Write the model to `dest` (skipped when a complete model is already there)."""
    dest = Path(dest)
    if (dest / "config.json").is_file() and (dest / "model.safetensors").is_file():
        return dest
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    dest.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.chat_template = CHAT_TEMPLATE

    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(dest, safe_serialization=True)
    fast.save_pretrained(dest)
    (dest / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    (dest / "MODEL_CARD.json").write_text(
        json.dumps({"what": "model-verify demo model", "seed": seed}), encoding="utf-8"
    )
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dest", type=Path, help="folder to write the model to")
    args = parser.parse_args(argv)
    print(build_demo_model(args.dest))
    return 0
