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
    from transformers import DeepseekV3Config, MixtralConfig, OlmoeConfig, Qwen2MoeConfig, Qwen3MoeConfig

    common = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.1,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    common.update(overrides)
    if family == "mixtral":
        return MixtralConfig(**{"intermediate_size": 32, "num_local_experts": 8, "num_experts_per_tok": 2, **common})
    if family == "qwen2_moe":
        return Qwen2MoeConfig(intermediate_size=96, moe_intermediate_size=32, shared_expert_intermediate_size=48,
                              num_experts=8, num_experts_per_tok=2, norm_topk_prob=False,
                              mlp_only_layers=[1], **common)
    if family == "qwen3_moe":
        return Qwen3MoeConfig(intermediate_size=96, moe_intermediate_size=32, num_experts=8, num_experts_per_tok=3,
                              head_dim=24, norm_topk_prob=True, **common)
    if family == "olmoe":
        return OlmoeConfig(intermediate_size=32, num_experts=8, num_experts_per_tok=2, clip_qkv=4.0, **common)
    if family.startswith("deepseek_v3"):
        common["num_key_value_heads"] = common["num_attention_heads"]
        deepseek = dict(intermediate_size=96, moe_intermediate_size=32, n_routed_experts=8, num_experts_per_tok=2,
                        n_group=2, topk_group=1, n_shared_experts=1, first_k_dense_replace=1,
                        routed_scaling_factor=2.5, kv_lora_rank=16, q_lora_rank=24, qk_nope_head_dim=16,
                        qk_rope_head_dim=8, v_head_dim=12)
        if family == "deepseek_v3_yarn":  # the other attention paths: plain q_proj, yarn rope, rope in halves
            deepseek.update(q_lora_rank=None, rope_interleave=False, rope_parameters={
                "rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64,
                "mscale": 1.0, "mscale_all_dim": 0.8})
        return DeepseekV3Config(**deepseek, **common)
    raise ValueError(family)


# Keys of the tiny checkpoints: every family, and `deepseek_v3_yarn`, a second deepseek_v3 (see family_config).
FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3", "deepseek_v3_yarn")


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
    with torch.no_grad():  # deepseek_v3's score bias starts at zero: make it steer the choice, as a trained one does
        for name, buffer in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buffer.normal_(0.0, 0.1)
    model.save_pretrained(path)
    if fused:  # the in-memory state dict is the fused layout
        for old in path.glob("*.safetensors"):
            old.unlink()
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    write_tokenizer(path)
    return path
