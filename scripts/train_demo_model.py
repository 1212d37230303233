"""Train the small Qwen3-MoE model that Switchyard ships as its built-in default model.

Pipeline, in reading order:

    corpus/*.txt ──split by document──▶ train / validation texts
      → byte-level BPE tokenizer (trained on the train split only)
      → packed token streams, documents joined by <|endoftext|>
      → Qwen3MoeForCausalLM from transformers (fine-grained routed experts, aux load-balancing loss)
      → AdamW, linear warmup + cosine decay, a wall-clock budget that stops cleanly
      → save_pretrained (weights stored as bfloat16) + tokenizer + generation config
      → reload from disk, evaluate: validation perplexity next to a unigram baseline, expert usage
      → TRAINING.md (the model card)

Run from the repository root (CPU, about 40 minutes on one core):

    .venv/bin/python scripts/train_demo_model.py
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import shlex
import sys
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

BOS, EOS, PAD = "<|startoftext|>", "<|endoftext|>", "<|pad|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, IM_START, IM_END]  # ids 0..4, in this order

# ChatML: the role is plain text after <|im_start|>, each turn ends with <|im_end|>.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# The Wikipedia sample has no article separator; an article ends with its link/reference lists, so the
# first prose line after an "External links" section starts the next article.
ARTICLE_END_SECTION = "External links"
LIST_LINE_PREFIXES = ("*", ";", ":", "#")
MIN_PROSE_CHARS = 40  # shorter lines in a link list are sub-headings ("Official", "Bibliographies")

SAMPLE_PROMPTS = ("The history of", "The city is", "In 1990, the")


@dataclasses.dataclass(frozen=True)
class TrainArgs:
    corpus: Path
    output: Path
    seed: int
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    num_experts: int
    top_k: int
    moe_intermediate_size: int
    router_aux_loss_coef: float
    seq_len: int
    batch_size: int
    max_steps: int
    max_minutes: float
    lr: float
    min_lr_ratio: float
    warmup_steps: int
    weight_decay: float
    val_fraction: float
    log_every: int
    eval_every: int
    eval_blocks: int
    threads: int

    def __post_init__(self):
        if not 0 < self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"top_k={self.top_k} must be in [1, num_experts={self.num_experts}]")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("hidden_size must divide into num_heads, num_heads into num_kv_heads")


# ---------------------------------------------------------------- corpus


def split_wiki_articles(text: str) -> list[str]:
    """Cut the Wikipedia sample into articles at the first prose line after each "External links" list."""
    articles, current, in_links = [], [], False
    for line in text.splitlines():
        stripped = line.strip()
        if in_links and len(stripped) > MIN_PROSE_CHARS and not stripped.startswith(LIST_LINE_PREFIXES):
            articles.append("\n".join(current).strip())
            current, in_links = [], False
        if stripped == ARTICLE_END_SECTION:
            in_links = True
        current.append(line)
    articles.append("\n".join(current).strip())
    return [a for a in articles if a]


def load_documents(corpus_dir: Path) -> dict[str, list[str]]:
    """Documents per source file: Wikipedia articles, and one news story per line of the Lee corpus."""
    documents = {}
    for path in sorted(corpus_dir.glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        if path.name.startswith("wiki"):
            documents[path.name] = split_wiki_articles(text)
        else:
            documents[path.name] = [line.strip() for line in text.splitlines() if line.strip()]
    if not documents:
        raise FileNotFoundError(f"no *.txt corpus files in {corpus_dir}")
    return documents


def split_train_val(documents: dict[str, list[str]], val_fraction: float) -> tuple[list[str], list[str]]:
    """Hold out the last whole documents of every source, just over val_fraction of its characters."""
    train, val = [], []
    for docs in documents.values():
        budget = val_fraction * sum(len(d) for d in docs)
        cut = len(docs) - 1  # at least one document of each source is held out
        while cut > 1 and sum(len(d) for d in docs[cut:]) < budget:
            cut -= 1
        train += docs[:cut]
        val += docs[cut:]
    return train, val


# ---------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style pre-tokenisation), special tokens first, no tokens added on encode."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def encode_stream(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> torch.Tensor:
    """All documents as one token stream, each followed by EOS. Returns [N] int64."""
    ids = []
    for encoded in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids += encoded + [tokenizer.eos_token_id]
    return torch.tensor(ids, dtype=torch.long)


def blocks_of(stream: torch.Tensor, seq_len: int, offset: int = 0) -> torch.Tensor:
    """Non-overlapping windows of seq_len + 1 tokens (inputs and shifted targets). Returns [B, seq_len + 1]."""
    usable = (len(stream) - offset - 1) // seq_len
    starts = offset + torch.arange(usable) * seq_len
    return torch.stack([stream[s : s + seq_len + 1] for s in starts.tolist()])


# ---------------------------------------------------------------- model


def build_config(args: TrainArgs, tokenizer: PreTrainedTokenizerFast) -> Qwen3MoeConfig:
    return Qwen3MoeConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        intermediate_size=4 * args.hidden_size,  # unused: every layer is an MoE layer
        moe_intermediate_size=args.moe_intermediate_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        num_key_value_heads=args.num_kv_heads,
        head_dim=args.hidden_size // args.num_heads,
        num_experts=args.num_experts,
        num_experts_per_tok=args.top_k,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        output_router_logits=True,
        router_aux_loss_coef=args.router_aux_loss_coef,
        max_position_embeddings=2048,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="bfloat16",  # how the checkpoint is stored; training itself runs in float32
    )


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(total, active per token): active counts top_k of num_experts routed experts, embeddings once (tied)."""
    cfg = model.config
    total = sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    active = total - experts + experts * cfg.num_experts_per_tok // cfg.num_experts
    return total, active


def lr_at(step: int, elapsed_minutes: float, args: TrainArgs) -> float:
    """Linear warmup to args.lr, then cosine decay to args.lr * min_lr_ratio.

    The decay ends at max_steps or at max_minutes, whichever comes first, so a run slowed down by a busy
    machine still finishes its schedule inside its time budget. Only a run that the step budget ends is
    reproducible step for step from its seed.
    """
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    by_steps = (step - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps)
    progress = min(1.0, max(by_steps, elapsed_minutes / args.max_minutes))
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate(model, blocks: torch.Tensor, batch_size: int) -> dict:
    """Mean next-token loss over blocks [B, T + 1] and per-layer expert selection counts [L, E]."""
    model.eval()
    cfg = model.config
    loss_sum, n_tokens = 0.0, 0
    counts = torch.zeros(cfg.num_hidden_layers, cfg.num_experts)
    for i in range(0, len(blocks), batch_size):
        batch = blocks[i : i + batch_size]
        out = model(input_ids=batch[:, :-1], output_router_logits=True)
        logits = out.logits.float()  # [b, T, V]
        loss_sum += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
        ).item()
        n_tokens += batch[:, 1:].numel()
        for layer, router_logits in enumerate(out.router_logits):  # each [b * T, E]
            chosen = router_logits.topk(cfg.num_experts_per_tok, dim=-1).indices
            counts[layer] += torch.bincount(chosen.reshape(-1), minlength=cfg.num_experts).float()
    model.train()
    return {"loss": loss_sum / n_tokens, "tokens": n_tokens, "expert_counts": counts}


def expert_usage(counts: torch.Tensor) -> list[dict]:
    """Per layer: routing entropy normalised by log(E) (1 = uniform), share of the busiest expert, unused experts."""
    share = counts / counts.sum(dim=-1, keepdim=True)  # [L, E]
    entropy = -(share * share.clamp_min(1e-12).log()).sum(-1) / math.log(counts.shape[-1])
    return [
        {"layer": layer, "entropy": entropy[layer].item(), "max_share": share[layer].max().item(),
         "unused": int((counts[layer] == 0).sum())}
        for layer in range(counts.shape[0])
    ]


def unigram_loss(train_stream: torch.Tensor, targets: torch.Tensor, vocab_size: int) -> float:
    """Mean negative log-likelihood of targets under add-one smoothed train-split token frequencies."""
    counts = torch.bincount(train_stream, minlength=vocab_size).double() + 1.0
    log_probs = counts.log() - counts.sum().log()
    return -log_probs[targets.reshape(-1)].mean().item()


# ---------------------------------------------------------------- training


def train(model, train_stream: torch.Tensor, val_blocks: torch.Tensor, args: TrainArgs) -> dict:
    """AdamW over shuffled packed blocks; keeps the weights with the best (subset) validation loss."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
    )
    generator = torch.Generator().manual_seed(args.seed)
    eval_blocks = val_blocks[: args.eval_blocks]
    coef = args.router_aux_loss_coef
    start, last_log = time.time(), time.time()
    step, epoch, tokens_seen, tokens_since_log = 0, 0, 0, 0
    best = {"loss": float("inf"), "step": 0, "state": None}
    history, stopped_by = [], "max_steps"
    model.train()
    while step < args.max_steps and stopped_by == "max_steps":
        # Each epoch shifts the block boundaries and reshuffles, so no window repeats exactly.
        offset = int(torch.randint(0, args.seq_len, (1,), generator=generator))
        blocks = blocks_of(train_stream, args.seq_len, offset)
        order = torch.randperm(len(blocks), generator=generator)
        for i in range(0, len(order) - args.batch_size + 1, args.batch_size):
            if step >= args.max_steps:
                break
            if time.time() - start >= args.max_minutes * 60:
                stopped_by = "max_minutes"
                break
            batch = blocks[order[i : i + args.batch_size]]  # [batch_size, seq_len + 1]
            lr = lr_at(step, (time.time() - start) / 60, args)
            for group in optimizer.param_groups:
                group["lr"] = lr
            out = model(input_ids=batch[:, :-1], output_router_logits=True)
            lm_loss = torch.nn.functional.cross_entropy(
                out.logits.reshape(-1, out.logits.shape[-1]), batch[:, 1:].reshape(-1)
            )
            (lm_loss + coef * out.aux_loss).backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += batch[:, 1:].numel()
            tokens_since_log += batch[:, 1:].numel()
            aux, lm_loss = out.aux_loss.item(), lm_loss.item()
            if step % args.log_every == 0 or step == args.max_steps:
                now = time.time()
                line = (f"step {step:5d}  epoch {epoch}  lr {lr:.2e}  "
                        f"tok/s {tokens_since_log / (now - last_log):6.0f}  train_loss {lm_loss:.4f}  "
                        f"aux {aux:.4f}  grad_norm {grad_norm:.2f}  elapsed {(now - start) / 60:5.1f}m")
                if step % args.eval_every == 0 or step == args.max_steps:
                    val = evaluate(model, eval_blocks, args.batch_size)
                    line += f"  val_loss {val['loss']:.4f}  val_ppl {math.exp(val['loss']):.1f}"
                    history.append({"step": step, "train_loss": lm_loss, "val_loss": val["loss"]})
                    if val["loss"] < best["loss"]:
                        best = {"loss": val["loss"], "step": step, "state": copy.deepcopy(model.state_dict())}
                print(line, flush=True)
                last_log, tokens_since_log = time.time(), 0
        epoch += 1
    # One last check, so the weights at the stopping step compete with the best ones seen.
    val = evaluate(model, eval_blocks, args.batch_size)
    if val["loss"] < best["loss"]:
        best = {"loss": val["loss"], "step": step, "state": None}
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    return {"steps": step, "epochs": epoch, "tokens_seen": tokens_seen, "stopped_by": stopped_by,
            "train_seconds": time.time() - start, "best_step": best["step"], "history": history}


# ---------------------------------------------------------------- saving and reporting


def save_checkpoint(model, tokenizer, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    model.config.use_cache = True
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(IM_END)],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=64,
    )
    model.to(torch.bfloat16).save_pretrained(output)
    tokenizer.save_pretrained(output, save_jinja_files=False)  # chat_template goes into tokenizer_config.json


def greedy_samples(model, tokenizer, max_new_tokens: int = 40) -> list[tuple[str, str]]:
    samples = []
    for prompt in SAMPLE_PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
        samples.append((prompt, tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)))
    return samples


def write_model_card(output: Path, facts: dict) -> None:
    usage_rows = "\n".join(
        f"| {u['layer']} | {u['entropy']:.3f} | {u['max_share']:.3f} | {u['unused']} |" for u in facts["usage"]
    )
    sample_rows = "\n".join(f"- **{p}**{c.replace(chr(10), ' ')}" for p, c in facts["samples"])
    text = f"""# Switchyard demo model

A small Qwen3-MoE language model (transformers' `Qwen3MoeForCausalLM`), trained from scratch on CPU on the
corpus in `shared/data/corpus/` (105 Wikipedia articles and the Lee news corpus). It exists so that the
serving path has a real, loadable MoE checkpoint with trained, non-collapsed routing; it is not a useful
assistant. It never saw chat-formatted text: the chat template is there for the API, not for quality.

## Architecture

| | |
|---|---|
| class | `Qwen3MoeForCausalLM` (`model_type: qwen3_moe`) |
| layers | {facts['layers']} (all MoE) |
| hidden size | {facts['hidden']} |
| attention | {facts['heads']} query heads, {facts['kv_heads']} key/value heads, head dim {facts['head_dim']} |
| routed experts | {facts['experts']} per layer, top-{facts['top_k']}, expert intermediate size {facts['moe_intermediate']} |
| vocabulary | {facts['vocab']} (byte-level BPE, trained on the train split) |
| parameters | {facts['params'] / 1e6:.2f} M total, {facts['active_params'] / 1e6:.2f} M active per token (embeddings tied) |
| stored as | bfloat16 safetensors, {facts['checkpoint_mb']:.1f} MB |
| expert tensors | {facts['expert_layout']} |

## Training

| | |
|---|---|
| command | `{facts['command']}` |
| seed | {facts['seed']} |
| data | train {facts['train_tokens']:,} tokens, validation {facts['val_tokens']:,} tokens (last ~{facts['val_fraction']:.0%} of each source's documents) |
| steps | {facts['steps']} x {facts['batch_size']} sequences x {facts['seq_len']} tokens ({facts['epochs']} passes) |
| tokens seen | {facts['tokens_seen']:,} |
| optimiser | AdamW (beta 0.9/0.95, weight decay {facts['weight_decay']}), lr {facts['lr']} with {facts['warmup']} warmup steps and cosine decay |
| router aux loss | coefficient {facts['aux_coef']} |
| stopped by | {facts['stopped_by']}; weights kept from step {facts['best_step']} (best validation loss) |
| wall time | {facts['train_minutes']:.1f} min training, {facts['total_minutes']:.1f} min in all, torch threads: {facts['threads']} |

## Validation (the saved bfloat16 checkpoint, {facts['val_targets']:,} predicted tokens)

| model | loss (nats/token) | perplexity |
|---|---|---|
| this model | {facts['val_loss']:.4f} | {math.exp(facts['val_loss']):.1f} |
| unigram, add-one smoothed train frequencies | {facts['unigram_loss']:.4f} | {math.exp(facts['unigram_loss']):.1f} |

## Expert usage on the validation text

Share of top-{facts['top_k']} selections per expert; entropy normalised by log({facts['experts']}), so 1.0 is uniform.

| layer | entropy | busiest expert's share | unused experts |
|---|---|---|---|
{usage_rows}

## Greedy continuations

{sample_rows}
"""
    (output / "TRAINING.md").write_text(text, encoding="utf-8")


def expert_layout(output: Path) -> str:
    """How the saved file names and shapes the experts of layer 0."""
    from safetensors import safe_open

    with safe_open(output / "model.safetensors", "pt") as f:
        names = [k for k in f.keys() if k.startswith("model.layers.0.mlp.experts")]
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in names}
    if len(names) <= 4:
        return ", ".join(f"`{k}` {list(s)}" for k, s in sorted(shapes.items()))
    return f"{len(names)} per-expert tensors in layer 0, e.g. `{sorted(names)[0]}` {list(shapes[sorted(names)[0]])}"


def parse_args(argv: list[str]) -> TrainArgs:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", nargs="?", type=Path, default=REPO_ROOT / "../shared/data/corpus")
    p.add_argument("--output", type=Path, default=REPO_ROOT / "configs/demo-model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--num-layers", type=int, default=6)
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--num-kv-heads", type=int, default=2)
    p.add_argument("--num-experts", type=int, default=32)
    p.add_argument("--top-k", type=int, default=4)
    p.add_argument("--moe-intermediate-size", type=int, default=128)
    p.add_argument("--router-aux-loss-coef", type=float, default=0.01)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=1200)
    p.add_argument("--max-minutes", type=float, default=38.0, help="training time budget; stops cleanly and saves")
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup-steps", type=int, default=60)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-blocks", type=int, default=64, help="validation blocks checked during training")
    # One thread: on a shared 2-core machine two OpenMP threads stall on each other's preemption (5-10x slower).
    p.add_argument("--threads", type=int, default=1)
    return TrainArgs(**{k.replace("-", "_"): v for k, v in vars(p.parse_args(argv)).items()})


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    wall_start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    documents = load_documents(args.corpus.resolve())
    train_texts, val_texts = split_train_val(documents, args.val_fraction)
    print(f"documents: {sum(map(len, documents.values()))} ({', '.join(f'{k}: {len(v)}' for k, v in documents.items())}); "
          f"train {len(train_texts)}, validation {len(val_texts)}", flush=True)
    tokenizer = train_tokenizer(train_texts, args.vocab_size)
    train_stream, val_stream = encode_stream(tokenizer, train_texts), encode_stream(tokenizer, val_texts)
    val_blocks = blocks_of(val_stream, args.seq_len)
    print(f"tokenizer: {len(tokenizer)} tokens; train {len(train_stream):,} tokens, "
          f"validation {len(val_stream):,} tokens ({val_blocks[:, 1:].numel():,} predicted)", flush=True)

    model = Qwen3MoeForCausalLM._from_config(build_config(args, tokenizer), dtype=torch.float32)
    params, active = count_params(model)
    print(f"model: {params / 1e6:.2f}M params, {active / 1e6:.2f}M active per token", flush=True)
    run = train(model, train_stream, val_blocks, args)
    save_checkpoint(model, tokenizer, args.output)
    del model

    # Everything below is measured on the checkpoint as saved (bfloat16), loaded the way a user would.
    saved = AutoModelForCausalLM.from_pretrained(args.output)
    final = evaluate(saved, val_blocks, args.batch_size)
    unigram = unigram_loss(train_stream, val_blocks[:, 1:], len(tokenizer))
    usage = expert_usage(final["expert_counts"])
    samples = greedy_samples(saved, tokenizer)
    checkpoint_mb = sum(f.stat().st_size for f in args.output.iterdir() if f.is_file()) / 1e6
    facts = {
        "layers": args.num_layers, "hidden": args.hidden_size, "heads": args.num_heads, "kv_heads": args.num_kv_heads,
        "head_dim": args.hidden_size // args.num_heads, "experts": args.num_experts, "top_k": args.top_k,
        "moe_intermediate": args.moe_intermediate_size, "vocab": len(tokenizer), "params": params,
        "active_params": active, "checkpoint_mb": checkpoint_mb, "expert_layout": expert_layout(args.output),
        "command": shlex.join(["python", "scripts/train_demo_model.py", *argv]), "seed": args.seed,
        "train_tokens": len(train_stream), "val_tokens": len(val_stream), "val_fraction": args.val_fraction,
        "batch_size": args.batch_size, "seq_len": args.seq_len, "tokens_seen": run["tokens_seen"],
        "steps": run["steps"], "epochs": f"{run['tokens_seen'] / len(train_stream):.1f}",
        "weight_decay": args.weight_decay, "lr": args.lr, "warmup": args.warmup_steps,
        "aux_coef": args.router_aux_loss_coef, "stopped_by": run["stopped_by"], "best_step": run["best_step"],
        "train_minutes": run["train_seconds"] / 60, "total_minutes": (time.time() - wall_start) / 60,
        "threads": args.threads, "val_targets": final["tokens"], "val_loss": final["loss"],
        "unigram_loss": unigram, "usage": usage, "samples": samples,
    }
    write_model_card(args.output, facts)

    print(f"\nsummary: {run['steps']} steps ({run['stopped_by']}), {run['tokens_seen']:,} tokens seen, "
          f"weights from step {run['best_step']}, {facts['total_minutes']:.1f} min")
    print(f"validation: loss {final['loss']:.4f} ppl {math.exp(final['loss']):.1f}  |  "
          f"unigram loss {unigram:.4f} ppl {math.exp(unigram):.1f}")
    for u in usage:
        print(f"layer {u['layer']}: expert entropy {u['entropy']:.3f}, busiest {u['max_share']:.3f}, unused {u['unused']}")
    for prompt, continuation in samples:
        print(f"{prompt!r} -> {continuation!r}")
    print(f"checkpoint: {args.output} ({checkpoint_mb:.1f} MB); experts: {facts['expert_layout']}")


if __name__ == "__main__":
    main()
