"""Train a tiny universal-segmenter test checkpoint on the demo street scenes and write its files.

Run ``python tests/data/build_universal.py [--family mask2former|maskformer|oneformer] [--out-dir DIR]``
from the repository root. It writes a ``from_pretrained``-loadable model of that family and its
processor (offline, safetensors, well under 2 MB) to ``tests/data/<family>_streets``; the bytes
are the same on every run (one CPU thread, fixed seeds).

Each model is trained on the same generated scenes as the demo SegFormer
(aim_cli/demo/train_segmenter.py), with the family's own loss (Hungarian-matched class, mask and
dice terms over one binary mask per class present) plus cross-entropy on exactly the decision
logits aim modulates: the log of the semantic scores sum_q softmax(class)_qc * sigmoid(mask)_q,
at the image size. (Cross-entropy alone left small classes unlearnt: the queries
settled on the large ones.) As for the demo, a moderate person weight leaves person the
under-segmented class that a focus boost improves. OneFormer is trained on its semantic task
prompt only, read through a character-level CLIP tokenizer saved with it, and without its
text-contrastive loss (``is_training=False``), which needs per-image text prompts.
"""

from __future__ import annotations

import argparse
import math
import string
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from aim_cli.demo import streets
from aim_cli.demo.train_segmenter import channel_stats
from aim_cli.models.universal_segmenter import ONEFORMER_TASK, log_scores_at

FAMILIES = ("mask2former", "maskformer", "oneformer")
DATA_DIR = Path(__file__).resolve().parent
PERSON_WEIGHT = 5.0
TASK_SEQ_LEN = 8  # "the task is semantic" is 20 characters: truncated tokens are still one fixed prompt
# A one-block-per-stage Swin: masks come at 1/4 of the 64x64 scene.
SWIN = {
    "model_type": "swin",
    "image_size": streets.IMAGE_SIZE,
    "embed_dim": 16,
    "depths": [1, 1, 1, 1],
    "num_heads": [1, 1, 2, 2],
    "window_size": 4,
    "drop_path_rate": 0.0,
    "out_features": ["stage1", "stage2", "stage3", "stage4"],
}


def default_out_dir(family: str) -> Path:
    """Where the tests look for the trained checkpoint of `family`."""
    return DATA_DIR / f"{family}_streets"


def char_clip_tokenizer():
    """A character-level CLIP tokenizer: tokenises OneFormer's task prompt offline, no download (tests use it too)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in string.ascii_lowercase:
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def build_processor(family: str, mean: list[float], std: list[float]):
    """The family's processor: a plain resize to the scene size, then normalise (OneFormer: plus tokenizer)."""
    import transformers as tf

    kwargs = dict(
        do_resize=True,
        size={"height": streets.IMAGE_SIZE, "width": streets.IMAGE_SIZE},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=mean,
        image_std=std,
        do_reduce_labels=False,
        ignore_index=255,
    )
    if family == "mask2former":
        return tf.Mask2FormerImageProcessor(**kwargs)
    if family == "maskformer":
        return tf.MaskFormerImageProcessor(**kwargs)
    return tf.OneFormerProcessor(
        image_processor=tf.OneFormerImageProcessor(**kwargs),
        tokenizer=char_clip_tokenizer(),
        task_seq_length=TASK_SEQ_LEN,
        max_seq_length=TASK_SEQ_LEN,
    )


def build_model(family: str):
    """An untrained tiny model of `family`: the Swin above, 12 queries, hidden width 32."""
    import transformers as tf

    id2label = dict(enumerate(streets.LABELS))
    labels = {
        "num_labels": len(streets.LABELS),
        "id2label": id2label,
        "label2id": {name: i for i, name in id2label.items()},
    }
    if family == "mask2former":
        config = tf.Mask2FormerConfig(
            backbone_config=SWIN,
            hidden_dim=32,
            mask_feature_size=32,
            feature_size=32,
            encoder_layers=1,
            decoder_layers=3,
            num_queries=12,
            encoder_feedforward_dim=64,
            dim_feedforward=64,
            num_attention_heads=2,
            dropout=0.0,
            train_num_points=1024,  # the matcher's sampled points: a 64x64 scene has only 4,096 pixels
            **labels,
        )
        return tf.Mask2FormerForUniversalSegmentation(config)
    if family == "maskformer":
        config = tf.MaskFormerConfig(
            backbone_config=SWIN,
            decoder_config={
                "model_type": "detr",
                "encoder_layers": 1,
                "decoder_layers": 3,
                "encoder_attention_heads": 2,
                "decoder_attention_heads": 2,
                "d_model": 32,
                "encoder_ffn_dim": 64,
                "decoder_ffn_dim": 64,
                "num_queries": 12,
                "dropout": 0.0,
            },
            fpn_feature_size=32,
            mask_feature_size=32,
            num_queries=12,
            **labels,
        )
        return tf.MaskFormerForInstanceSegmentation(config)
    config = tf.OneFormerConfig(
        backbone_config=SWIN,
        hidden_dim=32,
        conv_dim=32,
        mask_dim=32,
        encoder_feedforward_dim=64,
        dim_feedforward=64,
        encoder_layers=1,
        decoder_layers=3,
        num_attention_heads=2,
        num_queries=12,
        dropout=0.0,
        text_encoder_width=32,
        text_encoder_context_length=8,
        text_encoder_num_layers=1,
        text_encoder_vocab_size=64,
        text_encoder_proj_layers=1,
        text_encoder_n_ctx=4,
        task_seq_len=TASK_SEQ_LEN,
        train_num_points=1024,
        is_training=False,
        **labels,
    )
    return tf.OneFormerForUniversalSegmentation(config)


def task_inputs(family: str, processor) -> dict[str, torch.Tensor]:
    """Extra model inputs for one image: OneFormer's tokenised semantic task prompt, else none."""
    if family != "oneformer":
        return {}
    blank = np.zeros((streets.IMAGE_SIZE, streets.IMAGE_SIZE, 3), dtype=np.uint8)
    return {"task_inputs": processor(images=[blank], task_inputs=[ONEFORMER_TASK], return_tensors="pt")["task_inputs"]}


def preprocess(processor, images: list) -> torch.Tensor:
    """Run the (image) processor in chunks and return one float tensor N x 3 x H x W."""
    processor = getattr(processor, "image_processor", processor)
    chunks = [
        processor(images=images[i : i + 256], return_tensors="pt")["pixel_values"] for i in range(0, len(images), 256)
    ]
    return torch.cat(chunks).float()


def expand(extra: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """The one-image extra inputs repeated for a batch of `n`."""
    return {name: value.expand(n, -1) for name, value in extra.items()}


def decision_logits(model, pixels: torch.Tensor, extra: dict[str, torch.Tensor]) -> torch.Tensor:
    """Log semantic scores at the input size (masks upsampled, then combined), as aim decides."""
    out = model(pixel_values=pixels, **expand(extra, len(pixels)))
    return log_scores_at(out.class_queries_logits, out.masks_queries_logits, tuple(pixels.shape[-2:]))


@torch.no_grad()
def evaluate(model, pixels: torch.Tensor, masks: torch.Tensor, extra: dict[str, torch.Tensor]) -> dict[str, object]:
    """Pixel accuracy, mIoU, per-class IoU and recall."""
    model.eval()
    pred = torch.cat([decision_logits(model, pixels[i : i + 50], extra).argmax(1) for i in range(0, len(pixels), 50)])
    iou, recall = {}, {}
    for k, name in enumerate(streets.LABELS):
        truth, guess = masks == k, pred == k
        iou[name] = float((truth & guess).sum() / (truth | guess).sum().clamp(min=1))
        recall[name] = float((truth & guess).sum() / truth.sum().clamp(min=1))
    return {
        "pixel_accuracy": float((pred == masks).float().mean()),
        "miou": float(np.mean(list(iou.values()))),
        "iou": iou,
        "recall": recall,
    }


def train(model, pixels, masks, extra, steps: int, batch_size: int, lr: float, seed: int, person_weight: float) -> None:
    """AdamW with warm-up and a cosine schedule on the family's own loss plus the log-score cross-entropy."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.tensor([person_weight if name == "person" else 1.0 for name in streets.LABELS])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
    )
    model.train()
    started = time.time()
    for step in range(steps):
        index = torch.randint(len(pixels), (batch_size,), generator=generator)
        batch, target = pixels[index], masks[index]
        flip = torch.rand(batch_size, generator=generator) < 0.5
        batch[flip], target[flip] = batch[flip].flip(-1), target[flip].flip(-1)
        # The family's own loss (Hungarian-matched class + mask + dice terms, needs scipy) on one
        # binary mask per class present, plus cross-entropy on the decision logits aim modulates.
        present = [t.unique() for t in target]
        binary = [torch.stack([(t == c).float() for c in classes]) for t, classes in zip(target, present)]
        out = model(pixel_values=batch, mask_labels=binary, class_labels=present, **expand(extra, batch_size))
        scores = log_scores_at(out.class_queries_logits, out.masks_queries_logits, tuple(batch.shape[-2:]))
        loss = out.loss + F.cross_entropy(scores, target, weight=weights)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.time() - started:6.1f}s", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, train, save model and processor, report metrics on the evaluation scenes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=FAMILIES, default="mask2former")
    parser.add_argument("--out-dir", type=Path, help="default: tests/data/<family>_streets")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--person-weight", type=float, default=PERSON_WEIGHT)
    args = parser.parse_args(argv)
    out_dir = args.out_dir or default_out_dir(args.family)

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    started = time.time()
    train_set = streets.make_dataset("train", args.train_size)
    mean, std = channel_stats([image for image, _ in train_set])
    processor = build_processor(args.family, mean, std)
    extra = task_inputs(args.family, processor)
    pixels = preprocess(processor, [image for image, _ in train_set])
    masks = torch.from_numpy(np.stack([mask for _, mask in train_set])).long()

    model = build_model(args.family)
    train(model, pixels, masks, extra, args.steps, args.batch_size, args.lr, args.seed, args.person_weight)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    (out_dir / "model.safetensors").chmod(0o644)

    eval_set = streets.evaluation_set(200)
    metrics = evaluate(
        model,
        preprocess(processor, [image for image, _ in eval_set]),
        torch.from_numpy(np.stack([mask for _, mask in eval_set])).long(),
        extra,
    )
    size = (out_dir / "model.safetensors").stat().st_size
    print(f"trained in {time.time() - started:.0f}s; saved to {out_dir} ({size / 1e6:.2f} MB)")
    print(f"pixel accuracy {metrics['pixel_accuracy']:.4f}  mIoU {metrics['miou']:.4f}")
    for name in streets.LABELS:
        print(f"  {name:<11} IoU {metrics['iou'][name]:.3f}  recall {metrics['recall'][name]:.3f}")


if __name__ == "__main__":
    main()
