"""Tiny random checkpoints of every supported family, written by transformers' own classes."""

from __future__ import annotations

import json
from pathlib import Path

import torch

VOCAB = 320
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEXT = (
    "The history of the railway is a history of switches and yards. A switchyard sorts cars onto tracks, "
    "and a good yard master knows which cars travel together. Experts in a mixture of experts model are "
    "chosen by a gate; some experts are often chosen together, layer after layer. " * 4
)


def family_config(family: str, **overrides):
    from transformers import MixtralConfig, OlmoeConfig, Qwen2MoeConfig, Qwen3MoeConfig

    common = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.1,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    common.update(overrides)
    if family == "mixtral":
        return MixtralConfig(intermediate_size=32, num_local_experts=8, num_experts_per_tok=2, **common)
    if family == "qwen2_moe":
        return Qwen2MoeConfig(intermediate_size=96, moe_intermediate_size=32, shared_expert_intermediate_size=48,
                              num_experts=8, num_experts_per_tok=2, norm_topk_prob=False,
                              mlp_only_layers=[1], **common)
    if family == "qwen3_moe":
        return Qwen3MoeConfig(intermediate_size=96, moe_intermediate_size=32, num_experts=8, num_experts_per_tok=3,
                              head_dim=24, norm_topk_prob=True, **common)
    if family == "olmoe":
        return OlmoeConfig(intermediate_size=32, num_experts=8, num_experts_per_tok=2, clip_qkv=4.0, **common)
    raise ValueError(family)


FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe")


def write_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT], trainer)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "chat_template": CHAT_TEMPLATE,
        "tokenizer_class": "PreTrainedTokenizerFast"}))


def make_checkpoint(path: Path, family: str, fused: bool = False, seed: int = 0, **overrides) -> Path:
    """Save a random model of `family`; `fused` writes the 3-D expert layout instead of one tensor per expert."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(family_config(family, **overrides)).eval()
    model.save_pretrained(path)
    if fused:  # the in-memory state dict is the fused layout
        for old in path.glob("*.safetensors"):
            old.unlink()
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    write_tokenizer(path)
    return path
