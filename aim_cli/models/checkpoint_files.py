"""Checks on the JSON a checkpoint folder holds, run before any of its values sizes a tensor.

A checkpoint folder is untrusted input (docs/security.md, "Security model"): its processor, timm, label
and generation settings reach allocations (a 100000 x 100000 resize), loops (a label map's
largest id) and arithmetic (a string where a number belongs). Every value aim or a loader
reads is checked here for type and range, processed image sizes against INPUT_PIXELS and
every file's size against CONFIG_BYTES, so a bad file ends in one line naming the file, the
key and the fix (ModelError, exit 2) instead of an allocation, an internal error or a kill.
Keys a file does not set are left to the loaders' defaults.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from aim_cli.errors import InputError, ModelError
from aim_cli.limits import CONFIG_BYTES, INPUT_PIXELS, LABEL_COUNT, SEQUENCE_TOKENS, ascii_whole

# Files the loaders read as text at load time (weights are bounded by their own format).
_TEXT_SUFFIXES = (".json", ".jinja", ".txt", ".model")
# Image processor keys holding an output size: an edge, [height, width] or a dict of edges.
_SIZE_KEYS = ("size", "crop_size", "pad_size")
_EDGE_KEYS = ("height", "width", "shortest_edge", "longest_edge", "max_height", "max_width")
# Image processor keys holding one positive integer (a multiple sizes are padded or rounded to).
_DIVISOR_KEYS = (
    "size_divisor",
    "size_divisibility",
    "patch_size",
    "merge_size",
    "temporal_patch_size",
    "ensure_multiple_of",
)
# Processor switches without the do_ prefix (EfficientNet, DPT, BEiT, MobileViT), read as true/false.
_PROCESSOR_FLAGS = ("rescale_offset", "include_top", "keep_aspect_ratio", "reduce_labels")
# Settings a processor needs while a switch is on: transformers refuses a null one only when called.
_NEEDED_WHEN = {
    "do_resize": ("size", "resample"),
    "do_center_crop": ("crop_size",),
    "do_rescale": ("rescale_factor",),
    "do_normalize": ("image_mean", "image_std"),
}
# PIL's resampling filters (NEAREST .. LANCZOS are 0..5), as transformers' processors pass them on.
_RESAMPLE = range(6)
# timm's interpolation names (timm.data.transforms str_to_interp_mode).
_TIMM_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
_TIMM_CROP_MODES = ("center", "squash", "border")
# Generation settings that count tokens, and ones that count sequences or beams.
_TOKEN_COUNTS = (
    "max_new_tokens",
    "max_length",
    "min_length",
    "min_new_tokens",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
)
_ROW_COUNTS = ("num_beams", "num_beam_groups", "num_return_sequences")
_MAX_ROWS = 1024  # beams or sequences per prompt; aim generates one, a larger value is a broken file
_TOKEN_IDS = (
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
)
# Switches transformers reads as true/false from config.json and generation_config.json (a number
# or a list there reaches the forward pass, where output_hidden_states is iterated, say).
_MODEL_FLAGS = (
    "output_hidden_states",
    "output_attentions",
    "return_dict",
    "use_cache",
    "tie_word_embeddings",
    "is_encoder_decoder",
    "is_decoder",
)
_GENERATION_FLAGS = (
    "do_sample",
    "use_cache",
    "output_attentions",
    "output_hidden_states",
    "output_scores",
    "output_logits",
    "return_dict_in_generate",
    "renormalize_logits",
    "remove_invalid_values",
    "_from_model_config",
    "low_memory",
    "return_legacy_cache",
)
_SHOWN = 40  # characters of an offending value quoted in a message


def checkpoint_folder(spec: str) -> Path | None:
    """The folder a --model value loads from: a local directory or a cached hub snapshot; None if neither."""
    from aim_cli.models.local import force_offline, looks_like_path

    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists() or looks_like_path(spec):
        return None
    force_offline()
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(spec, "config.json")
    except Exception:  # not a valid repo id: the loader explains what is wrong
        return None
    return Path(found).parent if isinstance(found, str) else None


def read_json(path: Path, display: str) -> Any:
    """Parse one JSON file of a checkpoint, refusing one over CONFIG_BYTES before reading it."""
    _check_size(path, display)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{display}: {path.name} is not valid JSON ({detail[:120]})", _REFIX) from None


def check_checkpoint(spec: str, display: str | None = None) -> None:
    """Check every settings file a Hugging Face checkpoint folder holds; no folder (not cached) passes."""
    folder = checkpoint_folder(spec)
    if folder is None:
        return
    display = display or spec
    for path in sorted(folder.iterdir()):
        if path.suffix in _TEXT_SUFFIXES and path.is_file():
            _check_size(path, display)
    config = _read(folder, "config.json", display)
    if isinstance(config, dict):
        check_model_config(config, _Where(display, "config.json"))
    for name in ("preprocessor_config.json", "image_processor_config.json"):
        processor = _read(folder, name, display)
        if processor is not None:
            check_image_processor(processor, _Where(display, name))
            _check_patch_fits(config, processor, _Where(display, name))
    processor = _read(folder, "processor_config.json", display)
    if isinstance(processor, dict) and isinstance(processor.get("image_processor"), dict):
        check_image_processor(
            processor["image_processor"], _Where(display, "processor_config.json", "image_processor.")
        )
    generation = _read(folder, "generation_config.json", display)
    if generation is not None:
        check_generation_config(generation, _Where(display, "generation_config.json"))
    tokenizer = _read(folder, "tokenizer_config.json", display)
    if isinstance(tokenizer, dict) and "chat_template" in tokenizer:
        _chat_template_value(tokenizer["chat_template"], _Where(display, "tokenizer_config.json"))
    templates = _read(folder, "chat_template.json", display)
    if isinstance(templates, dict) and "chat_template" in templates:
        _chat_template_value(templates["chat_template"], _Where(display, "chat_template.json"))


_REFIX = "fix the file or copy the checkpoint again"


class _Where:
    """A file of a checkpoint, and the key prefix inside it: builds the one-line errors."""

    def __init__(self, display: str, file: str, prefix: str = "") -> None:
        self.display, self.file, self.prefix = display, file, prefix

    def error(self, key: str, value: Any, must: str, hint: str | None = None) -> ModelError:
        """'<display>: <file>: <key> is <value>; it must be <must>' with a fix."""
        shown = repr(value)
        shown = shown if len(shown) <= _SHOWN else shown[: _SHOWN - 3] + "..."
        return ModelError(
            f"{self.display}: {self.file}: '{self.prefix}{key}' is {shown}; it must be {must}",
            hint or f"correct '{self.prefix}{key}' in {self.file}, or delete it to use the default",
        )


def _check_size(path: Path, display: str) -> None:
    """Refuse a file over CONFIG_BYTES before anything reads it."""
    try:
        size = path.stat().st_size
    except OSError:
        return  # a dangling link: the loader names the missing file
    if size > CONFIG_BYTES.value():
        raise ModelError(
            f"{display}: {path.name} is {size:,} bytes, over the bound on checkpoint settings files",
            CONFIG_BYTES.hint(),
        )


def _read(folder: Path, name: str, display: str) -> Any:
    """The parsed JSON of folder/name, or None when the folder has no such file."""
    path = folder / name
    return read_json(path, display) if path.is_file() else None


# --- value checks ---------------------------------------------------------------------------------


def _is_int(value: Any) -> TypeGuard[int]:
    """A JSON integer (true/false are not numbers here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[float]:
    """A finite JSON number."""
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _int_in(where: _Where, key: str, value: Any, low: int, high: int, hint: str | None = None) -> int:
    """value, if an integer in low..high."""
    if not _is_int(value) or not low <= value <= high:
        raise where.error(key, value, f"an integer from {low:,} to {high:,}", hint)
    return value


def _positive(where: _Where, key: str, value: Any, high: float = math.inf) -> float:
    """value, if a finite number above 0 and at most high."""
    if not _is_number(value) or not 0 < value <= high:
        raise where.error(key, value, "a positive number" + (f" of at most {high:g}" if high < math.inf else ""))
    return float(value)


def _flag(where: _Where, key: str, value: Any) -> None:
    """do_* switches are true or false (null leaves the default)."""
    if value is not None and not isinstance(value, bool):
        raise where.error(key, value, "true or false")


def _channel_values(where: _Where, key: str, value: Any, nonzero: bool) -> None:
    """image_mean / image_std / mean / std: a number or a list of 1 or 3 (one per RGB channel)."""
    values = value if isinstance(value, list) else [value]
    if not 1 <= len(values) <= 3 or len(values) == 2 or not all(_is_number(v) for v in values):
        raise where.error(key, value, "a number or a list of 3 numbers (one per RGB channel)")
    # Real values are 0..1 or 0..255 (pixel scale); these bounds keep normalised pixels under ~1e6, so an
    # absurd setting is refused here instead of surfacing as NaN/inf logits.
    if nonzero and any(not 1e-3 <= v <= 1e3 for v in values):
        raise where.error(key, value, "from 0.001 to 1000: images are divided by it")
    if not nonzero and any(abs(v) > 1e3 for v in values):
        raise where.error(key, value, "from -1000 to 1000")


def _pixels(where: _Where, key: str, height: float, width: float) -> None:
    """An image size the preprocessing produces must stay within INPUT_PIXELS."""
    if height * width > INPUT_PIXELS.value():
        raise ModelError(
            f"{where.display}: {where.file}: '{where.prefix}{key}' resizes images to {height:,.0f} x {width:,.0f} "
            f"pixels, over the bound on a checkpoint's processed image size",
            f"correct '{where.prefix}{key}' in {where.file}, or {INPUT_PIXELS.hint()}",
        )


def _edge(where: _Where, key: str, value: Any) -> int:
    """One edge of an output size: a positive integer no longer than the pixel bound allows."""
    return _int_in(where, key, value, 1, INPUT_PIXELS.value())


def _size(where: _Where, key: str, value: Any, scale: float = 1.0) -> None:
    """An output size (an edge, [height, width] or a dict of edges) and the pixels it resizes to.

    `scale` is what a crop fraction enlarges the resize by (ConvNeXt's shortest_edge / crop_pct).
    An edge alone (shortest or longest) is checked as a square, the size of a square image.
    """
    if value is None:
        return
    if _is_int(value):
        edge = _edge(where, key, value) * scale
        _pixels(where, key, edge, edge)
    elif isinstance(value, list) and len(value) == 2:
        rows, columns = (_edge(where, f"{key}[{i}]", v) for i, v in enumerate(value))
        _pixels(where, key, rows * scale, columns * scale)
    elif isinstance(value, dict) and set(value) & set(_EDGE_KEYS):
        edges = {name: _edge(where, f"{key}.{name}", value[name]) for name in _EDGE_KEYS if value.get(name) is not None}
        height = edges.get("height", edges.get("max_height"))
        width = edges.get("width", edges.get("max_width"))
        short, long = edges.get("shortest_edge"), edges.get("longest_edge")
        if short is None and long is None and (height is None or width is None):
            # transformers accepts such a dict on load and refuses it on the first image.
            raise where.error(
                key, value, "a dict with height and width, shortest_edge, longest_edge, or max_height and max_width"
            )
        if height is not None and width is not None:
            _pixels(where, key, height * scale, width * scale)
        if short is not None:
            _pixels(where, key, short * scale, (long or short) * scale)
        elif long is not None:
            _pixels(where, key, long * scale, long * scale)
    else:
        raise where.error(key, value, f"an integer, [height, width] or a dict of {', '.join(_EDGE_KEYS)}")


def _edges(size: Any) -> list[int]:
    """The edge lengths an (already checked) size setting names; none for an absent one."""
    if _is_int(size):
        return [size]
    if isinstance(size, list):
        return [v for v in size if _is_int(v)]
    if isinstance(size, dict):
        return [v for k, v in size.items() if k in _EDGE_KEYS and _is_int(v)]
    return []


def check_image_processor(config: Any, where: _Where) -> None:
    """preprocessor_config.json: output sizes, normalisation, rescaling, resampling and switches."""
    if not isinstance(config, dict):
        raise where.error("", type(config).__name__, "a JSON object of processor settings")
    _check_switches(config, where)
    _check_output_sizes(config, where)
    for key in ("image_mean", "image_std"):
        if config.get(key) is not None:
            _channel_values(where, key, config[key], nonzero=key == "image_std")
    if config.get("rescale_factor") is not None:
        _positive(where, "rescale_factor", config["rescale_factor"], high=1.0)  # 1/255 scales bytes to 0..1
    if config.get("resample") is not None:
        _int_in(where, "resample", config["resample"], _RESAMPLE.start, _RESAMPLE.stop - 1)
    _check_edge_rounding(config, where)
    if config.get("num_labels") is not None:
        _int_in(where, "num_labels", config["num_labels"], 1, LABEL_COUNT.value(), _labels_hint(where))
    if config.get("ignore_index") is not None:
        _int_in(where, "ignore_index", config["ignore_index"], -(2**31), 2**31 - 1)


def _check_switches(config: dict[str, Any], where: _Where) -> None:
    """The do_* switches are booleans, and a setting a switched-on step needs is not null."""
    for key, value in config.items():
        if key.startswith("do_") or key in _PROCESSOR_FLAGS:
            _flag(where, key, value)
    for switch, keys in _NEEDED_WHEN.items():
        for key in keys:
            # An explicit null overrides the class default; an absent switch is on in every processor aim loads.
            if key in config and config[key] is None and config.get(switch) is not False:
                raise where.error(
                    key,
                    None,
                    f"set while '{switch}' is true",
                    f"set '{where.prefix}{key}', or delete it to use the default, in {where.file}",
                )


def _check_output_sizes(config: dict[str, Any], where: _Where) -> None:
    """crop_pct and every output size, each scaled as the processor scales it."""
    crop_pct = config.get("crop_pct")
    if crop_pct is not None:
        _positive(where, "crop_pct", crop_pct, high=1.0)
    elif "crop_pct" in config and isinstance(config.get("size"), dict) and "shortest_edge" in config["size"]:
        # A null crop_pct replaces the processor's default, and ConvNeXt-style resizing divides by it.
        raise where.error("crop_pct", None, "a number in (0, 1]")
    for key in _SIZE_KEYS:
        # ConvNeXt-style processors resize to shortest_edge / crop_pct before cropping.
        scale = 1.0 / crop_pct if key == "size" and crop_pct else 1.0
        _size(where, key, config.get(key), scale)


def _check_edge_rounding(config: dict[str, Any], where: _Where) -> None:
    """The divisors and multiples that edges are rounded to, and the older DETR-style edge bounds."""
    for key in _DIVISOR_KEYS:
        if config.get(key) is not None:
            _int_in(where, key, config[key], 1, 4096)
    multiple = config.get("ensure_multiple_of")
    edges = _edges(config.get("size"))
    # DPT rounds each resized edge to the nearest multiple: one over the edge rounds it to 0 pixels.
    if multiple is not None and edges and multiple > min(edges):
        raise where.error("ensure_multiple_of", multiple, f"at most the smallest edge of 'size' ({min(edges)})")
    for key in ("max_size", "min_size"):  # older DETR-style edge bounds
        if config.get(key) is not None:
            _size(where, key, config[key])


def _check_patch_fits(config: Any, processor: Any, where: _Where) -> None:
    """A processed image must be at least one of the model's patches across (else its patch conv fails)."""
    patch = config.get("patch_size") if isinstance(config, dict) else None
    if not _is_int(patch) or not isinstance(processor, dict):
        return
    crop = processor.get("do_center_crop") is not False and processor.get("crop_size") is not None
    key = "crop_size" if crop else "size"
    edges = _edges(processor.get(key))
    if edges and min(edges) < patch:
        raise where.error(key, processor[key], f"at least the model's patch_size ({patch}, config.json) on every edge")


def _labels_hint(where: _Where) -> str:
    """The fix for a class count: correct the file, or raise LABEL_COUNT."""
    return f"correct it in {where.file}, or {LABEL_COUNT.hint()}"


def check_model_config(config: dict[str, Any], where: _Where) -> None:
    """config.json: the class count and the id <-> label maps (a timm config also its pretrained_cfg)."""
    bound = LABEL_COUNT.value()
    for key in _MODEL_FLAGS:
        _flag(where, key, config.get(key))
    for key in ("num_labels", "num_classes"):
        if config.get(key) is not None:
            _int_in(where, key, config[key], 0, bound, _labels_hint(where))
    _check_token_ids(config, where)
    _check_model_sizes(config, where)
    id2label = config.get("id2label")
    if id2label is not None:
        _check_id2label(config, id2label, bound, where)
    label2id = config.get("label2id")
    if label2id is not None:
        if not isinstance(label2id, dict) or len(label2id) > bound:
            raise where.error("label2id", label2id, f"a mapping of at most {bound:,} class names to ids")
        for name, index in label2id.items():
            _class_id(where, f"label2id.{name}", index, bound)
    if "architecture" in config and "model_type" not in config:
        check_timm_config(config, where)


def _check_model_sizes(config: dict[str, Any], where: _Where) -> None:
    """The embedding tables' sizes (of the model and its text and vision parts) and the image size."""
    # Sizes of the embedding tables: 0 builds empty tables that fail only after torch's warnings.
    for section, prefix in (
        (config, ""),
        (config.get("text_config"), "text_config."),
        (config.get("vision_config"), "vision_config."),
    ):
        if not isinstance(section, dict):
            continue
        for key in ("vocab_size", "max_position_embeddings"):
            if section.get(key) is not None:
                _int_in(where, prefix + key, section[key], 1, 2**31 - 1)
    image_size = config.get("image_size")
    if image_size is not None:
        sizes = image_size if isinstance(image_size, list) and len(image_size) == 2 else [image_size]
        for index, edge in enumerate(sizes):
            _edge(where, "image_size" if len(sizes) == 1 else f"image_size[{index}]", edge)


def _check_id2label(config: dict[str, Any], id2label: Any, bound: int, where: _Where) -> None:
    """id2label names each class id 0..n-1 once, and agrees with num_labels."""
    if not isinstance(id2label, dict) or len(id2label) > bound:
        raise where.error("id2label", id2label, f"a mapping of at most {bound:,} class ids to names")
    ids = set()
    for key, label in id2label.items():
        ids.add(_class_id(where, f"id2label.{key}", key, bound))
        if not isinstance(label, str):
            raise where.error(f"id2label.{key}", label, "a class name (a string)")
    # transformers numbers classes 0..n-1 and, when num_labels disagrees, silently replaces every
    # name with LABEL_i: a gap or a mismatch would give classes names that are not theirs.
    gap = next((i for i in range(len(ids)) if i not in ids), None)
    if gap is not None or len(ids) != len(id2label):
        what = f"none for {gap}" if gap is not None else "an id given twice"
        raise where.error("id2label", id2label, f"one name for each class id 0 to {len(id2label) - 1} ({what})")
    count = config.get("num_labels")
    if _is_int(count) and count != len(id2label):
        raise ModelError(
            f"{where.display}: {where.file}: 'num_labels' is {count} but 'id2label' names {len(id2label)} classes",
            f"make them agree in {where.file} (transformers would drop every class name)",
        )


def _class_id(where: _Where, key: str, value: Any, bound: int) -> int:
    """A class id: an integer (a digit string in JSON keys) below the class bound."""
    parsed = ascii_whole(value) if isinstance(value, str) else None
    number = value if parsed is None else parsed
    return _int_in(where, key, number, 0, bound - 1, _labels_hint(where))


def check_timm_config(config: dict[str, Any], where: _Where) -> None:
    """A timm config.json: label names, model_args and the preprocessing in pretrained_cfg."""
    bound = LABEL_COUNT.value()
    names = config.get("label_names", config.get("labels"))
    if isinstance(names, dict):
        for key in names:
            _class_id(where, f"label_names.{key}", key, bound)
    elif names is not None and not isinstance(names, list):
        raise where.error("label_names", names, "a list of class names or an id -> name mapping")
    args = config.get("model_args")
    if args is not None and not isinstance(args, dict):
        raise where.error("model_args", args, "a JSON object of timm.create_model arguments")
    if isinstance(args, dict):
        if args.get("in_chans") not in (None, 3):
            raise where.error("model_args.in_chans", args["in_chans"], "3: aim feeds RGB images")
        if args.get("num_classes") is not None:
            _int_in(where, "model_args.num_classes", args["num_classes"], 0, bound, _labels_hint(where))
    nested = config.get("pretrained_cfg")
    if nested is not None and not isinstance(nested, dict):
        raise where.error("pretrained_cfg", nested, "a JSON object of preprocessing settings")
    # Older hub configs are one flat dict; newer ones nest the preprocessing under pretrained_cfg.
    cfg, prefix = (nested, "pretrained_cfg.") if isinstance(nested, dict) else (config, "")
    check_timm_preprocessing(cfg, _Where(where.display, where.file, prefix))


def check_timm_preprocessing(cfg: dict[str, Any], where: _Where) -> None:
    """timm's eval transform settings: input size (with the crop's enlargement), mean/std, interpolation."""
    crop_pct = cfg.get("crop_pct")
    if crop_pct is not None:
        _positive(where, "crop_pct", crop_pct, high=1.0)
    for key in ("input_size", "test_input_size"):
        value = cfg.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or len(value) != 3:
            raise where.error(key, value, "[channels, height, width]")
        _int_in(where, f"{key}[0]", value[0], 1, 4)
        height, width = (_edge(where, f"{key}[{i}]", v) for i, v in ((1, value[1]), (2, value[2])))
        # timm resizes to input_size / crop_pct, then crops to input_size.
        _pixels(where, key, height / (crop_pct or 1.0), width / (crop_pct or 1.0))
    for key in ("mean", "std"):
        if cfg.get(key) is not None:
            _channel_values(where, key, cfg[key], nonzero=key == "std")
    interpolation = cfg.get("interpolation")
    if interpolation not in (None, "", *_TIMM_INTERPOLATIONS):
        raise where.error("interpolation", interpolation, f"one of {', '.join(_TIMM_INTERPOLATIONS)}")
    if cfg.get("crop_mode") not in (None, *_TIMM_CROP_MODES):
        raise where.error("crop_mode", cfg["crop_mode"], f"one of {', '.join(_TIMM_CROP_MODES)}")
    if cfg.get("crop_border_pixels") is not None:
        _int_in(where, "crop_border_pixels", cfg["crop_border_pixels"], 0, 4096)
    for key in ("num_classes",):
        if cfg.get(key) is not None:
            _int_in(where, key, cfg[key], 0, LABEL_COUNT.value(), _labels_hint(where))


def check_generation_config(config: Any, where: _Where) -> None:
    """generation_config.json: lengths, beam counts, sampling numbers and token ids."""
    if not isinstance(config, dict):
        raise where.error("", type(config).__name__, "a JSON object of generation settings")
    tokens = SEQUENCE_TOKENS.value()
    for key in _TOKEN_COUNTS:
        if config.get(key) is not None:
            _int_in(where, key, config[key], 0, tokens, f"correct it in {where.file}, or {SEQUENCE_TOKENS.hint()}")
    for key in _ROW_COUNTS:
        if config.get(key) is not None:
            _int_in(where, key, config[key], 1, _MAX_ROWS)
    for key in (
        "temperature",
        "repetition_penalty",
        "encoder_repetition_penalty",
        "length_penalty",
        "diversity_penalty",
        "guidance_scale",
        "epsilon_cutoff",
        "eta_cutoff",
        "min_p",
    ):
        if config.get(key) is not None and not _is_number(config[key]):
            raise where.error(key, config[key], "a finite number")
    for key in ("top_p", "typical_p"):
        if config.get(key) is not None:
            _positive(where, key, config[key], high=1.0)
    if config.get("top_k") is not None:
        _int_in(where, "top_k", config["top_k"], 0, 2**31 - 1)
    for key in _GENERATION_FLAGS:
        _flag(where, key, config.get(key))
    if config.get("transformers_version") is not None and not isinstance(config["transformers_version"], str):
        raise where.error("transformers_version", config["transformers_version"], "a version string")
    _check_token_ids(config, where)


def _check_token_ids(config: dict[str, Any], where: _Where) -> None:
    """Special token ids: non-negative integers (not checked against vocab_size: real configs keep ids past it)."""
    highest = 2**31 - 1
    for key in _TOKEN_IDS:
        for index in _token_ids(where, key, config.get(key)):
            _int_in(where, key, index, 0, highest, f"correct it in {where.file}: token ids index the vocabulary")


def _token_ids(where: _Where, key: str, value: Any) -> Iterable[Any]:
    """The ids a token-id setting names: none, one, or a short list (eos_token_id may list several)."""
    if value is None:
        return ()
    if isinstance(value, list):
        if len(value) > _MAX_ROWS:
            raise where.error(key, value, f"a token id or a list of at most {_MAX_ROWS} ids")
        return value
    return (value,)


def _chat_template_value(value: Any, where: _Where) -> None:
    """A chat template: a string, a list of {name, template}, or null (none; chat_template.py bounds rendering)."""
    if value is None or isinstance(value, str):
        return
    if isinstance(value, list) and all(
        isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("template"), str)
        for item in value
    ):
        return
    raise where.error("chat_template", value, "a Jinja template string or a list of {name, template} objects")


# --- the processed size of one image ---------------------------------------------------------------
# The checks above bound a square image; a model's resize follows each image's aspect ratio, so a
# sane shortest_edge of 224 turns a 1 x 100000 image into 224 x 22,400,000 pixels (tens of GB).
# Each family states its resize as a Resize; every image is checked against it before preprocessing.

_STRETCH, _WITHIN, _COVER, _NEAREST = "stretch", "within", "cover", "nearest"


@dataclass(frozen=True)
class Resize:
    """How a model's preprocessing sizes an image, in the terms processed_size() computes with.

    `shortest` (and `longest`, a cap on the long edge) resize by edge, keeping the aspect ratio;
    `longest` alone fits the long edge. Otherwise `height` x `width` is a box the image is fitted
    to by `fit`: stretched to it, kept within it, covering it, or (DPT's keep_aspect_ratio) scaled
    by whichever edge's scale is closest to 1; with neither, images keep their size. Edges are
    then rounded up to a multiple of `multiple` (padding).
    """

    shortest: float | None = None
    longest: float | None = None
    height: float | None = None
    width: float | None = None
    fit: str = _STRETCH
    multiple: int = 1


def processed_size(resize: Resize, width: int, height: int) -> tuple[float, float]:
    """(height, width) a width x height image has after the resize, or an upper bound of it."""
    short, long = min(width, height), max(width, height)
    if resize.shortest is not None:
        scale = resize.shortest / short
        if resize.longest is not None and long * scale > resize.longest:
            scale = resize.longest / long
    elif resize.longest is not None:
        scale = resize.longest / long
    elif resize.height is not None and resize.width is not None:
        if resize.fit == _STRETCH:
            return _multiple(resize.height, resize.multiple), _multiple(resize.width, resize.multiple)
        by_height, by_width = resize.height / height, resize.width / width
        if resize.fit == _WITHIN:
            scale = min(by_height, by_width)
        elif resize.fit == _COVER:
            scale = max(by_height, by_width)
        else:
            scale = by_width if abs(1 - by_width) < abs(1 - by_height) else by_height
    else:
        return float(height), float(width)
    return _multiple(height * scale, resize.multiple), _multiple(width * scale, resize.multiple)


def _multiple(edge: float, multiple: int) -> float:
    """An edge rounded up to a multiple (padding, size_divisor)."""
    return float(math.ceil(edge / multiple) * multiple) if multiple > 1 else edge


def check_processed_size(resize: Resize, image: Any, name: object) -> None:
    """Refuse one image whose processed size is over INPUT_PIXELS (or under one pixel), naming it."""
    width, height = image.size
    out_height, out_width = processed_size(resize, width, height)
    if out_height * out_width > INPUT_PIXELS.value():
        raise InputError(
            f"{name}: the model's preprocessing resizes this {width} x {height} image to {out_width:,.0f} x "
            f"{out_height:,.0f} pixels, over the bound on a processed image",
            f"crop the image to a less extreme aspect ratio, or {INPUT_PIXELS.hint()}",
        )
    if min(out_height, out_width) < 1:
        raise InputError(
            f"{name}: the model's preprocessing resizes this {width} x {height} image to under one pixel across",
            "crop the image to a less extreme aspect ratio",
        )


def check_batch_sizes(resize: Resize | None, images: Sequence[Any]) -> None:
    """Every image of a batch against the processed-size bound; a model whose resize is unknown (None) passes."""
    if resize is None:
        return
    for index, image in enumerate(images):
        check_processed_size(resize, image, f"image {index + 1} of the batch")


def check_model_input(model: Any, image: Any, name: object) -> None:
    """check_processed_size with a loaded model's resize; one that states none (a test double) passes."""
    resize = getattr(model, "resize", None)
    if isinstance(resize, Resize):
        check_processed_size(resize, image, name)


@contextmanager
def mismatched_settings(display: str) -> Iterator[None]:
    """Preprocessing and forward pass: a ValueError there is a checkpoint whose files disagree.

    Each setting can be in bounds while the processor's output does not fit the network (a crop of
    1203 pixels for a ViT built for 32): transformers raises ValueError for that, which is the
    checkpoint's fault, not aim's, so it ends in one line (exit 2) instead of an internal error.
    """
    try:
        yield
    except ValueError as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ModelError(
            f"{display} cannot run on its own preprocessed images: {first[:200]}",
            "its processor settings and config.json must come from the same checkpoint",
        ) from None


def hf_resize(processor: Any) -> Resize | None:
    """The Resize of a loaded transformers image processor; None when its size setting is of no known form."""
    if getattr(processor, "do_resize", True) is False:
        return Resize()  # images keep their own size
    size = getattr(processor, "size", None)
    edge = {key: _size_edge(size, key) for key in _EDGE_KEYS}
    multiple = max(_whole(getattr(processor, key, None)) for key in ("size_divisor", "ensure_multiple_of"))
    scale = 1.0
    crop_pct = getattr(processor, "crop_pct", None)
    if _is_number(crop_pct) and 0 < crop_pct < 1:
        scale = 1 / crop_pct  # ConvNeXt, PoolFormer: resize to shortest_edge / crop_pct, then crop
    if type(processor).__name__.startswith("Levit"):
        scale = 256 / 224  # LeViT resizes the shortest edge to 256/224 of its setting, then crops
    if _is_int(size):  # a legacy bare edge: bounded as a shortest edge, the larger reading
        return Resize(shortest=size * scale, multiple=multiple)
    if edge["shortest_edge"] or edge["longest_edge"]:
        return Resize(_scaled(edge["shortest_edge"], scale), _scaled(edge["longest_edge"], scale), multiple=multiple)
    if edge["height"] and edge["width"]:
        fit = _NEAREST if getattr(processor, "keep_aspect_ratio", False) is True else _STRETCH
        return Resize(height=edge["height"] * scale, width=edge["width"] * scale, fit=fit, multiple=multiple)
    if edge["max_height"] and edge["max_width"]:
        return Resize(height=edge["max_height"], width=edge["max_width"], fit=_WITHIN, multiple=multiple)
    return None


def _size_edge(size: Any, key: str) -> int | None:
    """One edge of a processor's size (a dict or transformers' SizeDict); None when unset."""
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return value if _is_int(value) and value > 0 else None


def _whole(value: Any) -> int:
    """A positive integer setting, else 1."""
    return value if _is_int(value) and value > 0 else 1


def _scaled(edge: int | None, scale: float) -> float | None:
    """An edge enlarged by a crop's scale; None stays None."""
    return None if edge is None else edge * scale


def timm_resize(data_config: dict[str, Any]) -> Resize:
    """The Resize of timm's eval transform for a resolved data config (timm.data.transforms_imagenet_eval)."""
    _, height, width = data_config["input_size"]
    crop_pct = data_config.get("crop_pct") or 0.875  # timm's DEFAULT_CROP_PCT
    height, width = math.floor(height / crop_pct), math.floor(width / crop_pct)
    mode = data_config.get("crop_mode") or "center"
    if mode == "squash":
        return Resize(height=height, width=width, fit=_STRETCH)
    if mode == "border":
        return Resize(height=height, width=width, fit=_WITHIN)
    if height == width:
        return Resize(shortest=height)  # torchvision Resize with one edge: the shortest
    return Resize(height=height, width=width, fit=_COVER)


def torchvision_resize(transform: Any) -> Resize | None:
    """The Resize of a torchvision weights preset (ImageClassification, SemanticSegmentation)."""
    size = getattr(transform, "resize_size", None)
    size = size[0] if isinstance(size, (list, tuple)) and len(size) == 1 else size
    if _is_int(size):
        return Resize(shortest=size)  # one edge: torchvision resizes the shortest edge to it
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return Resize(height=size[0], width=size[1])
    return None
