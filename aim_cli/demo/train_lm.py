"""Build the offline character tokenizer and train the tiny embedded arithmetic causal LM.

Run with ``python -m aim_cli.demo.train_lm [--out-dir DIR]``; writes a Hugging Face model directory.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LogitsProcessorList,
    PreTrainedTokenizerFast,
)

from aim_cli.demo.arithmetic import evaluation_set, exact_match, make_problems, multiple_choice_set, split_size
from aim_cli.modulation import LentGlobalStream

DEFAULT_OUT_DIR: Path = Path(__file__).resolve().parent / "lm"
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<s>", "</s>", "<unk>")
# Digits and operators carry the task; a few letters and punctuation let odd prompts tokenize without <unk>.
CHARACTERS: str = "0123456789+-*/=()?:., " + "abcdefghijklmnopqrstuvwxyz"
MAX_POSITIONS: int = 64
# Answers are at most two digits plus </s>; one spare token lets a broken model show it does not stop.
MAX_NEW_TOKENS: int = 4
SEED: int = 0


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Return a character-level fast tokenizer that prepends <s> and decodes without separators."""
    vocab = {tok: i for i, tok in enumerate(list(SPECIAL_TOKENS) + list(CHARACTERS))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    # Every character is its own pre-token, so WordLevel acts as a character vocabulary.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    # Fuse joins tokens with no separator; the default decoder would put spaces between digits.
    backend.decoder = decoders.Fuse()
    # Prompts get <s> only (no </s>), matching the training sequences up to the answer.
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A",
        pair="<s> $A $B",
        special_tokens=[("<s>", vocab["<s>"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
    )


def build_model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """Return a freshly initialised tiny Llama sized for the character vocabulary."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=MAX_NEW_TOKENS,
    )
    return model


def encode_examples(
    tokenizer: PreTrainedTokenizerFast, problems: list[dict], with_bos: bool = True, width: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return left-padded input ids, attention mask and answer-only labels for ``prompt+answer</s>``."""
    rows: list[tuple[list[int], int]] = []
    for p in problems:
        prompt_ids = tokenizer(p["prompt"], add_special_tokens=with_bos)["input_ids"]
        answer_ids = tokenizer(p["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((prompt_ids + answer_ids, len(prompt_ids)))
    width = max([width] + [len(ids) for ids, _ in rows])
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(rows):
        start = width - len(ids)
        input_ids[i, start:] = torch.tensor(ids)
        attention[i, start:] = 1
        # Loss only on the answer and </s>: the operands are random and not worth modelling.
        labels[i, start + n_prompt :] = torch.tensor(ids[n_prompt:])
    return input_ids, attention, labels


@torch.no_grad()
def generate_answers(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    prompts: list[str],
    logits_processor: LogitsProcessorList | None = None,
    batch_size: int = 256,
) -> list[str]:
    """Return greedy completions (decoded, special tokens removed) for left-padded batches of prompts."""
    model.eval()
    outputs: list[str] = []
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True)
        generated = model.generate(
            **enc,
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            logits_processor=logits_processor,
        )
        # Left padding puts every prompt's end at the same column, so new tokens start there.
        new_tokens = generated[:, enc["input_ids"].shape[1] :]
        outputs.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return outputs


def exact_match_rate(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    problems: list[dict],
    logits_processor: LogitsProcessorList | None = None,
) -> float:
    """Return the fraction of problems whose greedy completion equals the answer."""
    predictions = generate_answers(model, tokenizer, [p["prompt"] for p in problems], logits_processor)
    return sum(exact_match(pred, p["answer"]) for pred, p in zip(predictions, problems)) / len(problems)


@torch.no_grad()
def multiple_choice_accuracy(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, items: list[dict]) -> float:
    """Return how often the argmax next token over the whole vocabulary is the right choice's token."""
    model.eval()
    enc = tokenizer([it["prompt"] for it in items], return_tensors="pt", padding=True)
    next_logits = model(**enc).logits[:, -1, :]
    predicted = next_logits.argmax(dim=-1).tolist()
    right = [tokenizer.convert_tokens_to_ids(it["choices"][it["answer"]]) for it in items]
    return sum(p == r for p, r in zip(predicted, right)) / len(items)


def _learning_rate(step: int, max_steps: int, peak: float, warmup: int) -> float:
    """Return the linear-warmup cosine-decay learning rate for ``step``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, max_steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def train(
    out_dir: Path,
    max_steps: int = 4000,
    batch_size: int = 128,
    peak_lr: float = 3e-3,
    target: float = 0.97,
    max_minutes: float = 10.0,
) -> dict:
    """Train until the held-out exact match reaches ``target`` (or the step/time budget ends) and save."""
    # The demo must train on a small shared CPU; one thread keeps it polite and reproducible.
    torch.set_num_threads(1)
    # Initialisers draw from torch's global generator (they take none): it draws the demo's seeded
    # stream for the run and is given back unchanged, so a caller's generator is never reseeded.
    with LentGlobalStream(SEED).lent():
        tokenizer = build_tokenizer()
        model = build_model(tokenizer)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"model parameters: {n_params:,}  vocab: {len(tokenizer)}")

        train_problems = make_problems("train", split_size("train"))
        ids, mask, labels = encode_examples(tokenizer, train_problems, with_bos=True)
        # A BOS-less copy makes the model robust to callers that tokenize with add_special_tokens=False.
        ids_nb, mask_nb, labels_nb = encode_examples(tokenizer, train_problems, with_bos=False, width=ids.shape[1])
        eval_problems = evaluation_set(200)
        mc_items = multiple_choice_set(200)

        optimizer = torch.optim.AdamW(model.parameters(), lr=peak_lr, weight_decay=0.01, betas=(0.9, 0.98))
        generator = torch.Generator().manual_seed(SEED)
        start = time.time()
        score = 0.0
        step = 0
        for step in range(1, max_steps + 1):
            model.train()
            rows = torch.randint(0, ids.shape[0], (batch_size,), generator=generator)
            drop_bos = torch.rand(batch_size, generator=generator) < 0.1
            b_ids = torch.where(drop_bos[:, None], ids_nb[rows], ids[rows])
            b_mask = torch.where(drop_bos[:, None], mask_nb[rows], mask[rows])
            b_labels = torch.where(drop_bos[:, None], labels_nb[rows], labels[rows])
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(step, max_steps, peak_lr, warmup=200)
            logits = model(input_ids=b_ids, attention_mask=b_mask).logits
            # Label smoothing caps the logit margins (~6 nats) so added logit noise degrades quality smoothly.
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                b_labels[:, 1:].reshape(-1),
                ignore_index=-100,
                label_smoothing=0.1,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if step % 250 == 0 or step == max_steps:
                score = exact_match_rate(model, tokenizer, eval_problems)
                minutes = (time.time() - start) / 60
                report = f"step {step:5d}  loss {loss.item():.4f}  eval exact match {score:.3f}  {minutes:.1f} min"
                print(report, flush=True)
                if score >= target or minutes > max_minutes:
                    break

        train_seconds = time.time() - start
        mc = multiple_choice_accuracy(model, tokenizer, mc_items)
        print(f"final eval exact match {score:.3f}  MC next-token accuracy {mc:.3f}  train time {train_seconds:.0f}s")
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
        print(f"saved to {out_dir}")
        return {"exact_match": score, "mc_accuracy": mc, "steps": step, "train_seconds": train_seconds}


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and run training."""
    parser = argparse.ArgumentParser(description="Train the embedded arithmetic demo language model.")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="where to save model and tokenizer")
    parser.add_argument("--max-steps", type=int, default=4000, help="upper bound on optimisation steps")
    args = parser.parse_args(argv)
    train(args.out_dir, max_steps=args.max_steps)


if __name__ == "__main__":
    main()
