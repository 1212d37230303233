"""The shipped demo checkpoint (configs/demo-model/, made by scripts/train_demo_model.py) is a loadable Qwen3-MoE."""

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

CHECKPOINT = Path(__file__).resolve().parents[1] / "configs" / "demo-model"
MAX_CHECKPOINT_BYTES = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(CHECKPOINT)


@pytest.fixture(scope="module")
def model():
    return transformers.AutoModelForCausalLM.from_pretrained(CHECKPOINT)


def test_checkpoint_is_small_enough():
    size = sum(f.stat().st_size for f in CHECKPOINT.iterdir() if f.is_file())
    assert size <= MAX_CHECKPOINT_BYTES, f"{size / 2**20:.1f} MiB"


def test_config_is_fine_grained_qwen3_moe():
    config = transformers.AutoConfig.from_pretrained(CHECKPOINT)
    assert config.model_type == "qwen3_moe"
    assert config.num_experts >= 32
    assert 2 <= config.num_experts_per_tok <= 6
    assert config.mlp_only_layers == [] and config.decoder_sparse_step == 1  # every layer routes


def test_model_loads_and_predicts(model, tokenizer):
    assert isinstance(model, transformers.Qwen3MoeForCausalLM)
    ids = tokenizer("The history of the city", return_tensors="pt")["input_ids"]  # [1, T]
    with torch.no_grad():
        out = model(input_ids=ids, output_router_logits=True)
    assert out.logits.shape == (1, ids.shape[1], model.config.vocab_size)
    assert torch.isfinite(out.logits.float()).all()
    assert len(out.router_logits) == model.config.num_hidden_layers  # each [T, num_experts]
    assert out.router_logits[0].shape == (ids.shape[1], model.config.num_experts)


def test_tokenizer_round_trips_text(tokenizer):
    text = "Anarchism is a political philosophy.\nÉmile Zola wrote 20 novels — in 1871–1893!"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text.encode("utf-8"))  # BPE merges, not bytes


def test_special_tokens_are_single_ids(tokenizer):
    for token in (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, "<|im_start|>", "<|im_end|>"):
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1, token
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3


def test_chat_template_renders_a_conversation(tokenizer):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a state of the USA."},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nName a state of the USA.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3


def test_switchyard_and_transformers_pick_the_same_greedy_tokens():
    import torch
    from transformers import AutoModelForCausalLM

    from switchyard.configs.defaults import DEMO_MODEL_DIR
    from switchyard.configs.engine import EngineConfig
    from switchyard.router.engine import Engine
    from switchyard.router.sampling import SamplingParams

    engine = Engine.from_pretrained(DEMO_MODEL_DIR, EngineConfig(max_num_seqs=4, max_model_len=128))
    prompts = [engine.tokenizer.encode(t) for t in ("The history of", "In 1990, the city", "Railways")]
    ours = engine.generate(prompts, SamplingParams(max_tokens=32, temperature=0.0, ignore_eos=True))
    # greedy with the repetition penalty of the model's generation_config.json, which transformers applies itself
    penalised = engine.generate(prompts, SamplingParams(max_tokens=32, temperature=0.0, ignore_eos=True,
                                                        repetition_penalty=1.2))
    reference = AutoModelForCausalLM.from_pretrained(DEMO_MODEL_DIR, dtype=torch.float32).eval()
    reference.generation_config.eos_token_id = None
    assert reference.generation_config.repetition_penalty == 1.2
    for prompt, out, out_penalised in zip(prompts, ours, penalised):
        with torch.no_grad():
            want = reference.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False,
                                      repetition_penalty=1.0)[0, len(prompt):]
            want_penalised = reference.generate(torch.tensor([prompt]), max_new_tokens=32,
                                                do_sample=False)[0, len(prompt):]
        assert list(out.token_ids) == want.tolist()
        assert list(out_penalised.token_ids) == want_penalised.tolist() != want.tolist()
