"""Text generation as a task: `aim.generate` over prompts with a profile, yielding `aim.Completion` records.

What `aim generate` runs, without Typer or a terminal: the prompts are gathered (text, prompt
files, a stream), checked and encoded, the decoding settings fitted to the model's context,
and the completions generated batch by batch in prompt order. With `output` the records file is
written here too, under the run-output rules of aim_cli.outputs: it never replaces an input,
`resume` keeps every earlier record, and the file is published only when a prompt succeeded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

import torch

from aim_cli.api.arguments import Notice, Progress, as_path, profile_file, quiet
from aim_cli.api.logits import ProfileLike, as_profile
from aim_cli.api.models import load_model
from aim_cli.demo import arithmetic
from aim_cli.errors import AimError, FailedInput, InputError
from aim_cli.generation import CompletionStreamer
from aim_cli.io import check_output_file
from aim_cli.models.language import LanguageModel, parse_dtype
from aim_cli.outputs import RunOutputs, guard_outputs, resumed_records
from aim_cli.profile import Profile, is_integer_number, is_real_number
from aim_cli.prompts import gather_prompts
from aim_cli.tasks.generate import (
    Completion,
    EncodedPrompt,
    GenerationSettings,
    encode_prompts,
    fitting_max_new_tokens,
    generate_completions,
    length_note,
    plan_generation,
)

if TYPE_CHECKING:
    from aim_cli.plans import ModulationPlan

__all__ = ["Completion", "Generation", "generate"]

OUTPUT_SUFFIXES = (".jsonl", ".csv")
# What `prompts` may be: one prompt, a prompts file (.txt/.jsonl), a text stream (read to its end), or a list of these.
PromptsLike = str | Path | TextIO | Sequence[str | Path]


class Generation:
    """The completions of one `aim.generate` call: iterate for `Completion` records, in prompt order.

    Everything that can fail before generating (options, prompts, the model, the output file)
    was checked when `generate` returned; the completions are generated batch by batch as the
    iteration asks for them. With an output file, the file is published once the iteration ends.

    Attributes:
        model: the language model that generates (None when a spec was not loaded because every
            prompt was already answered in the resumed output).
        prompts: the prompts this run generates, after resume; `len()` is their number.
        streaming: whether `stream` receives the single prompt's text as it is generated.
    """

    def __init__(
        self,
        model: LanguageModel | None,
        prompts: Sequence[str],
        completions: Generator[Completion, None, None],
        streaming: bool,
    ) -> None:
        self.model = model
        self.prompts = tuple(prompts)
        self.streaming = streaming
        self._completions = completions

    def __iter__(self) -> Iterator[Completion]:
        return self

    def __next__(self) -> Completion:
        return next(self._completions)

    def __len__(self) -> int:
        return len(self.prompts)

    def close(self) -> None:
        """Stop early: the output file keeps its finished records only when a signal stopped the run."""
        self._completions.close()


def _no_completions() -> Generator[Completion, None, None]:
    """The completions of a run with every prompt already answered: none."""
    yield from ()


def generate(
    model: LanguageModel | str | None = None,
    prompts: PromptsLike | None = None,
    profile: ProfileLike | None = None,
    *,
    max_new_tokens: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop: str | Sequence[str] = (),
    chat: bool = False,
    compare: bool = False,
    seed: int | None = None,
    batch_size: int = 8,
    device: str | torch.device = "auto",
    dtype: str = "auto",
    device_map: str | None = None,
    output: str | Path | None = None,
    resume: bool = False,
    stream: Callable[[str], None] | None = None,
    progress: Progress | None = None,
    notice: Notice | None = None,
    failures: list[FailedInput] | None = None,
) -> Generation:
    """Generate modulated completions of `prompts` with a causal or encoder-decoder LM (as `aim generate`).

    Args:
        model: a model from `aim.load_model(task="generate")`, or a spec loaded for you (as
            `--model`); None is the demo arithmetic LM.
        prompts: a prompt, a list of prompts, a prompts file (`pathlib.Path`, .txt one per line or
            .jsonl with a "prompt" field), a text stream read to its end (e.g. `sys.stdin`; a
            terminal is not read), or a list mixing texts and files. None with the demo LM is its
            demo prompt.
        profile: an `aim.ProfileLike` (Profile, YAML-schema mapping or a bare sigma); None is clean.
        max_new_tokens: tokens to generate (default: the model's, else 64), fitted to the context.
        temperature: 0 decodes greedily; above 0 samples (with `top_k` / `top_p`, in (0, 1]).
        stop: cut each completion at the first of these strings.
        chat: wrap each prompt in the tokenizer's chat template.
        compare: also generate the clean (unmodulated) completion, as `clean_completion`.
        seed: overrides the profile's noise seed (a repeatable run).
        batch_size: prompts per generate() call.
        device: where a spec's model is loaded: auto, cpu, cuda[:N], mps or a torch.device.
        dtype: a spec's weights dtype: auto, float32, bfloat16 or float16.
        device_map: "auto" spreads a spec's large model over GPUs/CPU (needs accelerate).
        output: also write the records to this .jsonl or .csv file (published when the iteration ends).
        resume: keep `output`'s records and generate only the prompts not answered there.
        stream: with a single prompt to generate, called with its completion's text as it is generated.
        progress: called with the number of prompts done after each batch.
        notice: called with human-readable notes (the model and settings, context fitting, resume).
        failures: a prompt whose logits are not finite is recorded here and the others go on;
            without a list it raises aim.ModelError.

    Returns:
        A `Generation`: iterate it for the `Completion` records. Errors are aim.AimError subclasses.
    """
    say = notice or quiet
    plan_profile = as_profile(Profile() if profile is None else profile, seed)
    stops = _check_decoding(max_new_tokens, temperature, top_k, top_p, stop, batch_size)
    spec = _check_loading(model, device, dtype, device_map)
    given, files, stdin = _split_prompts(prompts)
    output_path = as_path(output, "output")
    if output_path is not None:
        check_output_file(output_path, OUTPUT_SUFFIXES)
    guard_outputs(
        [("--output", output_path)],
        [*(("--prompts", path) for path in files), ("--profile", profile_file(plan_profile))],
        spec,
    )
    texts = gather_prompts(
        given,
        files,
        stdin,
        arithmetic.DEFAULT_PROMPT if model is None else None,
        notice=lambda: say("reading prompts from standard input (end with Ctrl-D)"),
    )
    kept = resumed_records(output_path, resume, "prompt", texts, say)
    texts = _remaining(texts, kept)
    if not texts:  # every prompt already answered: the file already holds them, so it is left as it was
        say(f"nothing to do: every prompt is already answered in {output_path}")
        return Generation(model if isinstance(model, LanguageModel) else None, (), _no_completions(), False)
    lm = model if isinstance(model, LanguageModel) else _load(spec, device, dtype, device_map)
    plan = plan_generation(plan_profile, lm)
    encoded = encode_prompts(lm, texts, chat=chat)
    requested = max_new_tokens or lm.default_max_new_tokens
    fitted = fitting_max_new_tokens(lm, encoded, requested)
    decoding = GenerationSettings(fitted, float(temperature), top_k, top_p, stops, batch_size)
    _describe_run(lm, plan, decoding, requested, say)
    streaming = stream is not None and len(encoded) == 1
    streamer = CompletionStreamer(lm.tokenizer, stream, stops) if stream is not None and streaming else None
    run = _Run(lm, encoded, plan, decoding, compare, progress, failures)
    if output_path is None:
        return Generation(lm, texts, run.completions(streamer), streaming)
    settings = plan.describe() | {"temperature": float(temperature)}
    return Generation(lm, texts, run.write(output_path, settings, kept, say, streamer), streaming)


class _Run:
    """One planned generation: the encoded prompts, the plan and the decoding settings."""

    def __init__(
        self,
        lm: LanguageModel,
        encoded: list[EncodedPrompt],
        plan: ModulationPlan,
        decoding: GenerationSettings,
        compare: bool,
        progress: Progress | None,
        failures: list[FailedInput] | None,
    ) -> None:
        self.lm = lm
        self.encoded = encoded
        self.plan = plan
        self.decoding = decoding
        self.compare = compare
        self.progress = progress
        self.failures = failures

    def completions(self, streamer: CompletionStreamer | None = None) -> Generator[Completion, None, None]:
        """The completions in prompt order; running out of GPU memory is one aim error."""
        try:
            yield from generate_completions(
                self.lm,
                self.encoded,
                self.plan,
                self.decoding,
                self.compare,
                self.progress,
                streamer=streamer,
                failures=self.failures,
            )
        except torch.cuda.OutOfMemoryError:
            raise AimError(
                f"out of GPU memory generating with batch size {self.decoding.batch_size}",
                "lower --batch-size or --max-new-tokens, use --dtype bfloat16, or --device-map auto",
            ) from None

    def write(
        self,
        output: Path,
        settings: dict[str, object],
        kept: list[dict[str, object]],
        say: Notice,
        streamer: CompletionStreamer | None = None,
    ) -> Generator[Completion, None, None]:
        """The completions, each also streamed to `output` (after the kept records), published once all are written."""
        with RunOutputs() as run:
            writer = run.records(output, keep_on_interrupt=bool(kept))  # only a resumed file holds the old records too
            for record in kept:
                writer.write(record)
            for item in self.completions(streamer):
                writer.write(_record(item, settings))
                run.success()
                yield item
        if run.publish():
            new = run.succeeded
            say(
                f"wrote {new} new and {len(kept)} resumed record(s) to {output}"
                if kept
                else f"wrote {new} record(s) to {output}"
            )


def _record(item: Completion, settings: dict[str, object]) -> dict[str, object]:
    """A flat, machine-readable record for one prompt (a line of the output file)."""
    record: dict[str, object] = {"prompt": item.prompt, "completion": item.completion}
    if item.clean_completion is not None:
        record["clean_completion"] = item.clean_completion
    record.update(prompt_tokens=item.prompt_tokens, completion_tokens=item.completion_tokens)
    record.update(settings)
    return record


def _check_decoding(
    max_new_tokens: Any, temperature: Any, top_k: Any, top_p: Any, stop: Any, batch_size: Any
) -> tuple[str, ...]:
    """Refuse decoding settings out of range before any work; the stop strings as a tuple."""
    if max_new_tokens is not None and (not is_integer_number(max_new_tokens) or max_new_tokens < 1):
        raise InputError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if not is_real_number(temperature) or not temperature >= 0:
        raise InputError(f"temperature must be a number >= 0, got {temperature!r}", "0 decodes greedily")
    if top_k is not None and (not is_integer_number(top_k) or top_k < 1):
        raise InputError(f"top_k must be an integer >= 1, got {top_k!r}")
    if top_p is not None and not (is_real_number(top_p) and 0 < top_p <= 1):
        got = f"{top_p:g}" if is_real_number(top_p) else repr(top_p)
        raise AimError(f"--top-p must be in (0, 1], got {got}")
    if not is_integer_number(batch_size) or batch_size < 1:
        raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, Sequence) or not all(isinstance(item, str) for item in stops):
        raise InputError(f"stop must be a string or a list of strings, got {type(stop).__name__}")
    return tuple(stops)


def _check_loading(model: object, device: str | torch.device, dtype: str, device_map: str | None) -> str | None:
    """Refuse a bad model argument or loading options before any work; the spec to load (None: the demo)."""
    if isinstance(model, LanguageModel):
        if device != "auto" or dtype != "auto" or device_map is not None:
            raise InputError(
                "device, dtype and device_map apply when model is a spec; this model is already loaded",
                "pass them to aim.load_model instead",
            )
        return None
    if model is not None and not isinstance(model, str):
        raise InputError(
            f"model must be a loaded language model or a spec (str), got {type(model).__name__}",
            'e.g. aim.load_model(task="generate") or "path/to/checkpoint"',
        )
    if device_map and device != "auto":
        raise AimError("--device and --device-map exclude each other", "--device-map auto places the layers itself")
    parse_dtype(dtype)  # fail on a bad dtype before reading stdin or loading anything
    return model


def _load(spec: str | None, device: str | torch.device, dtype: str, device_map: str | None) -> LanguageModel:
    """The language model a spec names (None: the demo LM)."""
    return load_model(spec, task="generate", device=device, dtype=dtype, device_map=device_map)


def _split_prompts(prompts: PromptsLike | None) -> tuple[list[str], list[Path], TextIO | None]:
    """The prompt texts, prompt files and stream that `prompts` names."""
    if prompts is None:
        return [], [], None
    if isinstance(prompts, str):
        return [prompts], [], None
    if isinstance(prompts, Path):
        return [], [prompts], None
    if hasattr(prompts, "read"):
        return [], [], cast(TextIO, prompts)  # a text stream (sys.stdin, an open file)
    if not isinstance(prompts, Sequence):
        raise InputError(
            f"prompts must be a str, a list of str, a pathlib.Path or a text stream, got {type(prompts).__name__}"
        )
    texts = [item for item in prompts if isinstance(item, str)]
    files = [item for item in prompts if isinstance(item, Path)]
    if len(texts) + len(files) != len(prompts):
        odd = next(item for item in prompts if not isinstance(item, (str, Path)))
        raise InputError(f"prompts must be strings (or pathlib.Path prompt files), got a {type(odd).__name__}")
    return texts, files, None


def _remaining(texts: list[str], kept: list[dict[str, object]]) -> list[str]:
    """The prompts not yet answered in `kept` (a prompt given twice needs two records)."""
    answered = Counter(str(record.get("prompt")) for record in kept)
    remaining = []
    for text in texts:
        if answered[text] > 0:
            answered[text] -= 1
        else:
            remaining.append(text)
    return remaining


def _describe_run(
    lm: LanguageModel,
    plan: ModulationPlan,
    decoding: GenerationSettings,
    requested: int,
    say: Notice,
) -> None:
    """The notes on how this run modulates and decodes, and on what it will not apply."""
    text = f"model: {lm.name} | {plan.summary()}"
    if decoding.sampling:
        text += f" | temperature {decoding.temperature:g}"
        text += f" top-k {decoding.top_k}" if decoding.top_k else ""
        text += f" top-p {decoding.top_p:g}" if decoding.top_p else ""
    else:
        text += " | greedy"
    say(text)
    if decoding.max_new_tokens < requested:
        say(length_note(lm, decoding.max_new_tokens))
    if lm.dropped_settings:
        say(
            f"note: not applying the checkpoint's {', '.join(lm.dropped_settings)} "
            "(aim's noise goes on the raw logits; decoding is greedy or --temperature/--top-k/--top-p)"
        )
    if not decoding.sampling and (decoding.top_k is not None or decoding.top_p is not None):
        say("note: --top-k/--top-p only apply when sampling (--temperature > 0); decoding greedily")
