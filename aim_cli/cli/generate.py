"""`aim generate`: text generation from a causal or encoder-decoder LM with utility and focus modulation."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from aim_cli.cli.common import (
    BatchOption,
    CompareOption,
    DeviceOption,
    FocusSigmaOption,
    ProfileOption,
    QuietOption,
    ResumeOption,
    RunOutputs,
    SeedOption,
    SigmaOption,
    app,
    guard_outputs,
    out_console,
    printable,
    profile_from_options,
    progress_bar,
    report_failures,
    require_stdout,
    resumed_records,
    say,
    writing_stdout,
)
from aim_cli.demo import arithmetic
from aim_cli.errors import AimError, FailedInput
from aim_cli.io import check_output_file
from aim_cli.prompts import gather_prompts

if TYPE_CHECKING:  # torch and transformers' generation stack are imported only when `aim generate` runs
    from aim_cli.api import ModulationPlan
    from aim_cli.api.commands import Completion, EncodedPrompt, GenerationSettings, LanguageModel

OUTPUT_SUFFIXES = (".jsonl", ".csv")
# The names models.language.DTYPES maps (a test keeps them equal), spelled here so --help needs no torch.
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")

LanguageModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Local HF directory or cached hub id of a causal or encoder-decoder (T5, BART) LM. "
        "Default: the demo arithmetic LM.",
    ),
]
WordFocusOption = Annotated[
    list[str] | None,
    typer.Option(
        "--focus",
        "-f",
        help="Focus WORD[:up|down]: boost or suppress every token of the word "
        "(with/without leading space, capitalised); repeatable.",
    ),
]


def _record(item: Completion, settings: dict[str, object]) -> dict[str, object]:
    """A flat, machine-readable record for one prompt."""
    record: dict[str, object] = {"prompt": item.prompt, "completion": item.completion}
    if item.clean_completion is not None:
        record["clean_completion"] = item.clean_completion
    record.update(prompt_tokens=item.prompt_tokens, completion_tokens=item.completion_tokens)
    record.update(settings)
    return record


def _describe(plan: ModulationPlan, decoding: GenerationSettings) -> str:
    """One stderr line saying how this run modulates and decodes."""
    text = plan.summary()
    if decoding.sampling:
        text += f" | temperature {decoding.temperature:g}"
        text += f" top-k {decoding.top_k}" if decoding.top_k else ""
        text += f" top-p {decoding.top_p:g}" if decoding.top_p else ""
    else:
        text += " | greedy"
    return text


@app.command()
def generate(
    prompt: Annotated[list[str] | None, typer.Option("--prompt", help="Prompt text; repeatable.")] = None,
    prompts_file: Annotated[
        Path | None,
        typer.Option("--prompts", help='Prompts file: .txt (one per line) or .jsonl (a "prompt" field).'),
    ] = None,
    model: LanguageModelOption = None,
    chat: Annotated[bool, typer.Option("--chat", help="Wrap each prompt in the tokenizer's chat template.")] = False,
    profile: ProfileOption = None,
    sigma: SigmaOption = None,
    focus: WordFocusOption = None,
    focus_sigma: FocusSigmaOption = None,
    seed: SeedOption = None,
    max_new_tokens: Annotated[
        int | None,
        typer.Option("--max-new-tokens", "-n", min=1, help="Tokens to generate (default: the model's, else 64)."),
    ] = None,
    temperature: Annotated[
        float, typer.Option("--temperature", "-t", min=0.0, help="0 = greedy (default); > 0 samples.")
    ] = 0.0,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, help="Sample from the k most likely tokens.")] = None,
    top_p: Annotated[float | None, typer.Option("--top-p", help="Nucleus sampling mass, in (0, 1].")] = None,
    stop: Annotated[
        list[str] | None, typer.Option("--stop", help="Cut the completion at this string; repeatable.")
    ] = None,
    batch_size: BatchOption = 8,
    device: DeviceOption = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help=f"Weights dtype: {', '.join(DTYPE_NAMES)}.")] = "auto",
    device_map: Annotated[
        str | None,
        typer.Option(
            "--device-map", help="'auto' spreads a large model over GPUs/CPU (pip install 'aim-cli\\[accelerate]')."
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write .jsonl (or .csv) records instead of text.")
    ] = None,
    compare: CompareOption = False,
    resume: ResumeOption = False,
    quiet: QuietOption = False,
) -> None:
    """Generate text with a modulated causal or encoder-decoder LM (default: the demo arithmetic LM)."""
    import torch

    from aim_cli.api.commands import (
        GenerationSettings,
        encode_prompts,
        fitting_max_new_tokens,
        generate_completions,
        length_note,
        load_model,
        parse_dtype,
        plan_generation,
    )
    from aim_cli.devices import resolve_device

    settings_profile = profile_from_options(profile, sigma, focus, focus_sigma, seed)
    if top_p is not None and not 0 < top_p <= 1:
        raise AimError(f"--top-p must be in (0, 1], got {top_p:g}")
    if device_map and device != "auto":
        raise AimError("--device and --device-map exclude each other", "--device-map auto places the layers itself")
    parse_dtype(dtype)  # fail on a bad --dtype before reading stdin or loading anything
    if output is not None:
        check_output_file(output, OUTPUT_SUFFIXES)
    else:
        require_stdout("completions")
    guard_outputs([("--output", output)], [("--prompts", prompts_file), ("--profile", profile)], model)
    texts = gather_prompts(
        prompt,
        prompts_file,
        sys.stdin,
        arithmetic.DEFAULT_PROMPT if model is None else None,
        notice=lambda: say("reading prompts from standard input (end with Ctrl-D)", quiet),
    )
    kept = resumed_records(output, resume, "prompt", texts, lambda note: say(note, quiet))
    texts = _remaining(texts, kept)
    if not texts:  # every prompt already answered: the file already holds them, so it is left as it was
        say(f"nothing to do: every prompt is already answered in {output}", quiet)
        return
    lm = load_model("generate", model, device=resolve_device(device), dtype=dtype, device_map=device_map)
    plan = plan_generation(settings_profile, lm)
    encoded = encode_prompts(lm, texts, chat=chat)
    requested = max_new_tokens or lm.default_max_new_tokens
    fitted = fitting_max_new_tokens(lm, encoded, requested)
    decoding = GenerationSettings(fitted, temperature, top_k, top_p, tuple(stop or ()), batch_size)
    say(f"model: {lm.name} | {_describe(plan, decoding)}", quiet)
    if fitted < requested:
        say(length_note(lm, fitted), quiet)
    if lm.dropped_settings:
        say(
            f"note: not applying the checkpoint's {', '.join(lm.dropped_settings)} "
            "(aim's noise goes on the raw logits; decoding is greedy or --temperature/--top-k/--top-p)",
            quiet,
        )
    settings = plan.describe() | {"temperature": temperature}

    if not decoding.sampling and (top_k is not None or top_p is not None):
        say("note: --top-k/--top-p only apply when sampling (--temperature > 0); decoding greedily", quiet)
    # A prompt the model computes NaN/inf logits for fails alone; the others are written.
    failures: list[FailedInput] = []
    published = True
    try:
        if output is not None:
            published = _write_records(lm, encoded, plan, decoding, compare, output, settings, quiet, kept, failures)
        elif len(encoded) == 1 and not compare:
            with writing_stdout():
                _stream_one(lm, encoded, plan, decoding, failures)
            published = not failures
        else:
            with progress_bar("generating", len(encoded), quiet) as advance:
                results = list(generate_completions(lm, encoded, plan, decoding, compare, advance, failures=failures))
            with writing_stdout():
                if results:
                    _print_results(results, compare)
            published = bool(results)
    except torch.cuda.OutOfMemoryError:
        raise AimError(
            f"out of GPU memory generating with batch size {batch_size}",
            "lower --batch-size or --max-new-tokens, use --dtype bfloat16, or --device-map auto",
        ) from None
    report_failures(failures, published)


def _stream_one(
    lm: LanguageModel,
    encoded: list[EncodedPrompt],
    plan: ModulationPlan,
    decoding: GenerationSettings,
    failures: list[FailedInput],
) -> None:
    """Print a single prompt's completion to stdout as it is generated."""
    from aim_cli.api.commands import CompletionStreamer, generate_completions

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    streamer = CompletionStreamer(lm.tokenizer, write, decoding.stop)
    for _ in generate_completions(lm, encoded, plan, decoding, streamer=streamer, failures=failures):
        write("\n")  # the completion is whole: end its line (a failed prompt yields nothing)


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


def _write_records(
    lm: LanguageModel,
    encoded: list[EncodedPrompt],
    plan: ModulationPlan,
    decoding: GenerationSettings,
    compare: bool,
    output: Path,
    settings: dict[str, object],
    quiet: bool,
    kept: list[dict[str, object]],
    failures: list[FailedInput],
) -> bool:
    """Stream kept and new records to the output file, published atomically once all are written; True if it was."""
    from aim_cli.api.commands import generate_completions

    with RunOutputs() as run:
        writer = run.records(output, keep_on_interrupt=bool(kept))  # only a resumed file holds the old records too
        for record in kept:
            writer.write(record)
        with progress_bar("generating", len(encoded), quiet) as advance:
            for item in generate_completions(lm, encoded, plan, decoding, compare, advance, failures=failures):
                writer.write(_record(item, settings))
                run.success()
    if not run.publish():
        return False
    written = run.succeeded
    say(
        f"wrote {written} new and {len(kept)} resumed record(s) to {output}"
        if kept
        else f"wrote {written} record(s) to {output}",
        quiet,
    )
    return True


def _print_results(results: list[Completion], compare: bool) -> None:
    """Two labelled lines for one prompt; a table for several."""
    if len(results) == 1 and compare:
        item = results[0]
        out_console.print(f"modulated: {printable(item.completion)}", highlight=False, markup=False, soft_wrap=True)
        out_console.print(
            f"clean:     {printable(item.clean_completion)}", highlight=False, markup=False, soft_wrap=True
        )
        return
    table = Table(show_header=True, header_style="bold")
    table.add_column("prompt", overflow="fold")
    table.add_column("completion", overflow="fold")
    if compare:
        table.add_column("clean", overflow="fold")
    for item in results:
        row = [escape(printable(item.prompt)), escape(printable(item.completion))]
        if compare:
            changed = item.clean_completion != item.completion
            row.append(("[yellow]" if changed else "") + escape(printable(item.clean_completion or "")))
        table.add_row(*row)
    out_console.print(table)
