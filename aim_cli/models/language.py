"""Language models behind one interface: tokenizer, network, context lengths, devices.

Causal LMs (GPT-2, Llama, ...) and encoder-decoder ones (T5, BART, ...) both generate token by
token; for an encoder-decoder the prompt goes to the encoder and the completion is the decoder's output.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aim_cli.errors import AimError, InputError, ModelError
from aim_cli.models.chat_template import render_chat
from aim_cli.models.hub import load_pretrained, locate

DTYPES: dict[str, torch.dtype | None] = {
    "auto": None,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
# Files any of the tokenizer back ends can be rebuilt from; a folder with none of them has no tokenizer.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tekken.json",
)
# Tokenizers without a real limit report a huge sentinel as model_max_length.
_NO_LIMIT = 1_000_000
DEFAULT_MAX_NEW_TOKENS = 64
# Generation-config settings that build logits processors transformers runs BEFORE aim's (penalties,
# n-gram blocking, minimum lengths, biases) or sampling warpers aim does not offer: aim drops them, so
# noise lands on the raw logits that calibration scores, and decoding is only what the flags say.
CHECKPOINT_DECODING_SETTINGS = (
    "repetition_penalty",
    "encoder_repetition_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "sequence_bias",
    "min_length",
    "min_new_tokens",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    "guidance_scale",
    "min_p",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
    "top_h",
    "watermarking_config",
    "renormalize_logits",
)
# The value at which a numeric setting builds no processor (the others: 0, unset, empty or False).
_NEUTRAL_AT = {"repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "guidance_scale": 1.0, "typical_p": 1.0}


@dataclass
class LanguageModel:
    """A loaded LM: tokenizer, network, where inputs go, and its context limits.

    `context_length` bounds the prompt (with the completion, for a causal LM); an encoder-decoder
    also has `decoder_context_length`, the bound on the completion alone (None when positions are
    relative, as in T5).
    """

    name: str
    model: Any  # a transformers PreTrainedModel with a generate() method
    tokenizer: Any  # a transformers PreTrainedTokenizerBase
    device: torch.device
    context_length: int | None
    encoder_decoder: bool = False
    decoder_context_length: int | None = None
    dropped_settings: tuple[str, ...] = ()  # the checkpoint's decoding settings aim does not apply

    @property
    def default_max_new_tokens(self) -> int:
        """The checkpoint's own max_new_tokens if its generation config sets one, else 64."""
        value = getattr(getattr(self.model, "generation_config", None), "max_new_tokens", None)
        return int(value) if value else DEFAULT_MAX_NEW_TOKENS

    @property
    def has_chat_template(self) -> bool:
        """True when the tokenizer carries a chat template."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    def chat_text(self, prompt: str) -> str:
        """Wrap one user message in the tokenizer's chat template, ready for the assistant's reply."""
        if not self.has_chat_template:
            raise ModelError(
                f"--chat: the tokenizer of {self.name} has no chat template",
                "drop --chat to use the prompt as plain text, or use a chat/instruct checkpoint",
            )
        # Rendered as transformers would, but bounded in length, work and memory (the template is checkpoint code).
        return render_chat(self.tokenizer, [{"role": "user", "content": prompt}], self.name)

    def encode(self, text: str, chat: bool) -> list[int]:
        """Token ids of one prompt; the chat template brings its own special tokens."""
        if chat:
            ids = list(self.tokenizer(self.chat_text(text), add_special_tokens=False)["input_ids"])
        else:
            ids = list(self.tokenizer(text)["input_ids"])
        self._check_ids_fit(ids)
        return ids

    def _check_ids_fit(self, ids: list[int]) -> None:
        """Token ids must index the model's embedding table: a tokenizer from another model would crash it."""
        rows = self.model.get_input_embeddings().num_embeddings
        largest = max(ids, default=0)
        if largest >= rows:
            raise ModelError(
                f"the tokenizer of {self.name} gives token id {largest}, past the model's {rows}-row embedding table",
                "use the tokenizer saved with this model",
            )

    def decoder_prefix(self) -> list[int]:
        """Decoder tokens before the first free choice: the start token, and a forced BOS (BART).

        Empty for a causal LM, whose first free choice follows the prompt directly.
        """
        if not self.encoder_decoder:
            return []
        generation = getattr(self.model, "generation_config", None)
        prefix = [decoder_start_id(generation, self.model.config)]
        forced = getattr(generation, "forced_bos_token_id", None)
        return [*prefix, int(forced)] if forced is not None else prefix

    @torch.inference_mode()
    def first_token_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(N, V) float32 logits of the first freely chosen token after each (unpadded) prompt.

        V is the tokenizer's size: columns of a padded output layer are no tokens, so they are
        no classes either (they would raise chance level and could win under noise).
        """
        if not self.encoder_decoder:
            logits = self.model(input_ids=input_ids).logits[:, -1, :]
        else:
            prefix = torch.tensor([self.decoder_prefix()], device=input_ids.device).expand(input_ids.shape[0], -1)
            logits = self.model(input_ids=input_ids, decoder_input_ids=prefix).logits[:, -1, :]
        return logits[:, : len(self.tokenizer)].float()


def parse_dtype(name: str) -> torch.dtype | None:
    """Map auto/float32/bfloat16/float16 (and short aliases) to a torch dtype; None means auto."""
    key = (name or "auto").strip().lower()
    key = _DTYPE_ALIASES.get(key, key)
    if key not in DTYPES:
        raise AimError(f"unknown --dtype '{name}'", f"use one of {', '.join(DTYPES)}")
    return DTYPES[key]


def load_language_model(
    source: str, display: str, device: torch.device, dtype: str = "auto", device_map: str | None = None
) -> LanguageModel:
    """Load a causal or encoder-decoder LM from a local Hugging Face directory or a cached hub id, offline.

    With `device_map` the layers are spread by accelerate and `device` is not used.
    """
    from transformers import AutoConfig, AutoTokenizer

    torch_dtype = parse_dtype(dtype)
    target = _check_device_map(device_map) if device_map else device
    config = load_pretrained(AutoConfig.from_pretrained, source, "model configuration")
    factory, what, encoder_decoder = _model_class(config, display)
    _check_tokenizer_files(source)
    tokenizer = load_pretrained(AutoTokenizer.from_pretrained, source, "tokenizer")
    # Left padding keeps every prompt's last token in the last column, where generate() reads the next token;
    # an encoder is padded on the right, so learned absolute positions (BART) start at 0 in every row.
    tokenizer.padding_side = "right" if encoder_decoder else "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ModelError(f"the tokenizer of {display} has neither a pad nor an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token
    kwargs: dict[str, Any] = {"config": config, _dtype_keyword(): _load_dtype(torch_dtype, config, target)}
    if device_map:
        kwargs["device_map"] = device_map
    model = load_pretrained(factory.from_pretrained, source, what, complete=True, **kwargs)
    if device_map:
        # With layers spread over devices, inputs go where the embedding lives.
        input_device = model.get_input_embeddings().weight.device
    else:
        model.to(target)
        input_device = target
    model.eval()
    dropped = drop_checkpoint_decoding(model.generation_config)
    check_forced_tokens(model.generation_config, _output_width(model), display)
    if encoder_decoder:
        decoder_start_id(model.generation_config, config, display)  # fail at load, not mid-generation
    return LanguageModel(
        display,
        model,
        tokenizer,
        input_device,
        _context_length(config, tokenizer),
        encoder_decoder,
        _decoder_length(config) if encoder_decoder else None,
        dropped,
    )


def drop_checkpoint_decoding(generation_config: Any) -> tuple[str, ...]:
    """Unset the checkpoint's own logits processors (CHECKPOINT_DECODING_SETTINGS); returns 'name=value' of each.

    transformers runs them before any custom processor, so a repetition penalty or a minimum
    length would change the logits aim's noise is added to, and they would differ from the raw
    logits the multiple-choice calibration scores.
    """
    dropped = []
    for name in CHECKPOINT_DECODING_SETTINGS:
        value = getattr(generation_config, name, None)
        if value is None:
            continue
        if (
            value is not False
            and value != _NEUTRAL_AT.get(name, 0)
            and not (isinstance(value, (list, tuple, dict)) and not value)
        ):
            dropped.append(f"{name}={value}")
        setattr(generation_config, name, None)
    return tuple(dropped)


def _model_class(config: Any, display: str) -> tuple[Any, str, bool]:
    """The Auto class that loads this config for generation, what to call it, and whether it is seq2seq.

    Encoder-decoder configs are checked first: BART's config is also in the causal mapping
    (BartForCausalLM, its decoder alone), which would silently drop the encoder.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING,
    )

    if getattr(config, "is_encoder_decoder", False) and type(config) in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING:
        return AutoModelForSeq2SeqLM, "encoder-decoder language model", True
    if not getattr(config, "is_encoder_decoder", False) and type(config) in MODEL_FOR_CAUSAL_LM_MAPPING:
        _refuse_masked_lm(config, display)
        return AutoModelForCausalLM, "causal language model", False
    raise ModelError(
        f"{display} is not a causal language model nor an encoder-decoder one (its config is {type(config).__name__})",
        "aim generate needs a checkpoint AutoModelForCausalLM or AutoModelForSeq2SeqLM can load, "
        "e.g. Llama, GPT-2, Qwen, T5, BART",
    )


def _refuse_masked_lm(config: Any, display: str) -> None:
    """Refuse an encoder-only masked LM (BERT, RoBERTa, ...) that the causal mapping would accept.

    transformers maps these configs to a *ForCausalLM / *LMHeadModel class too, whose weights a
    *ForMaskedLM checkpoint fills completely, so it would load and generate garbage; only a
    checkpoint saved as that causal class (or configured as a decoder) is a real generator.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = str(getattr(config, "model_type", None) or "")  # "" is in neither mapping
    causal = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    masked = MODEL_FOR_MASKED_LM_MAPPING_NAMES.get(model_type)
    architectures = list(getattr(config, "architectures", None) or [])
    if masked is None or masked == causal or getattr(config, "is_decoder", False) or causal in architectures:
        return
    raise ModelError(
        f"{display} is a {architectures[0] if architectures else masked}, an encoder-only masked language model, "
        "not a causal language model: it fills in blanks instead of predicting the next token",
        "aim generate needs a next-token model such as Llama, GPT-2, Qwen, T5 or BART",
    )


def _output_width(model: Any) -> int | None:
    """How many logits the model computes per position (its output vocabulary), if it says."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return int(weight.shape[0])
    vocab = getattr(model.config, "vocab_size", None)
    return vocab if isinstance(vocab, int) and not isinstance(vocab, bool) else None


def check_forced_tokens(generation_config: Any, width: int | None, display: str = "the model") -> None:
    """Forced first/last tokens index the logits: one past the model's vocabulary fails at load, not mid-generation."""
    if width is None:
        return
    for name in ("forced_bos_token_id", "forced_eos_token_id"):
        value = getattr(generation_config, name, None)
        ids = value if isinstance(value, (list, tuple)) else [value]
        for index in ids:
            if isinstance(index, int) and not isinstance(index, bool) and not 0 <= index < width:
                raise ModelError(
                    f"{display}: generation_config.json: '{name}' is {index}, not a token of its "
                    f"{width}-token vocabulary",
                    f"correct {name} in generation_config.json (or remove it)",
                )


def decoder_start_id(generation_config: Any, config: Any, display: str = "the model") -> int:
    """The token an encoder-decoder's output starts with, as generate() picks it (start token, else BOS)."""
    decoder = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    vocab = getattr(decoder, "vocab_size", None)
    for source, file in ((generation_config, "generation_config.json"), (config, "config.json")):
        for name in ("decoder_start_token_id", "bos_token_id"):
            value = getattr(source, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                if value < 0 or (isinstance(vocab, int) and value >= vocab):
                    raise ModelError(
                        f"{display}: {file}: '{name}' is {value}, not a token of its {vocab}-token vocabulary",
                        f"set {name} to the token its decoder starts with",
                    )
                return value
    raise ModelError(
        f"{display} sets no decoder_start_token_id (nor a bos_token_id), so its decoder cannot start",
        "set decoder_start_token_id in its config.json or generation_config.json",
    )


def _decoder_length(config: Any) -> int | None:
    """The longest decoder sequence: its position table's size; None for relative positions (T5)."""
    decoder = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    value = getattr(decoder, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def _check_device_map(device_map: str) -> torch.device:
    """--device-map spreads a model over the GPUs (and CPU) with accelerate, which is optional."""
    if device_map not in DEVICE_MAPS:
        raise AimError(f"unknown --device-map '{device_map}'", f"use one of {', '.join(DEVICE_MAPS)}")
    if importlib.util.find_spec("accelerate") is None:
        raise ModelError(
            f"--device-map {device_map} needs the accelerate package, which is not installed",
            "pip install 'aim-cli[accelerate]'",
        )
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load_dtype(requested: torch.dtype | None, config: Any, device: torch.device) -> torch.dtype | str:
    """The dtype to load weights in: the one asked for, else the checkpoint's own ('auto').

    float16 matmuls are slow or missing on CPUs, so an fp16 checkpoint loads as float32 there.
    """
    if requested is not None:
        return requested
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if device.type == "cpu" and str(stored).replace("torch.", "") == "float16":
        return torch.float32
    return "auto"


def _dtype_keyword() -> str:
    """from_pretrained takes `dtype` since transformers 4.56 (and only that in v5); `torch_dtype` before."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _check_tokenizer_files(source: str) -> None:
    """A local model folder without any tokenizer file cannot encode prompts: say so plainly."""
    location, local = locate(source)
    if not local:
        return
    folder = Path(location)
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelError(
            f"model directory {source} has no tokenizer (none of tokenizer.json, tokenizer_config.json, "
            "tokenizer.model, vocab.json)",
            "save it beside the weights with tokenizer.save_pretrained(DIR)",
        )


def _context_length(config: Any, tokenizer: Any) -> int | None:
    """The longest sequence the model handles: max_position_embeddings, else the tokenizer's limit."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _NO_LIMIT:
        return limit
    return None


def check_prompt_fits(lm: LanguageModel, index: int, length: int) -> None:
    """A prompt must leave room for at least one new token inside the model's context.

    An encoder's prompt only has to fit the encoder: the completion lives in the decoder.
    """
    if lm.encoder_decoder:
        if lm.context_length is not None and length > lm.context_length:
            raise InputError(
                f"prompt {index + 1} is {length} tokens long but the encoder of {lm.name} takes at most "
                f"{lm.context_length} tokens",
                "shorten the prompt",
            )
        return
    if lm.context_length is not None and length >= lm.context_length:
        raise InputError(
            f"prompt {index + 1} is {length} tokens long but {lm.name} has a context of "
            f"{lm.context_length} tokens (prompt plus completion must fit)",
            "shorten the prompt",
        )
