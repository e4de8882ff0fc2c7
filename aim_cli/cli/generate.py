"""`aim generate`: text generation from a causal or encoder-decoder LM with utility and focus modulation."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

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
    SeedOption,
    SigmaOption,
    app,
    out_console,
    printable,
    profile_from_options,
    progress_bar,
    report_failures,
    require_stdout,
    say,
    writing_stdout,
)
from aim_cli.errors import FailedInput

if TYPE_CHECKING:  # torch and transformers' generation stack are imported only when `aim generate` runs
    from aim_cli.api.generation import Completion, Generation

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


PromptOption = Annotated[list[str] | None, typer.Option("--prompt", help="Prompt text; repeatable.")]
PromptsFileOption = Annotated[
    Path | None, typer.Option("--prompts", help='Prompts file: .txt (one per line) or .jsonl (a "prompt" field).')
]
ChatOption = Annotated[bool, typer.Option("--chat", help="Wrap each prompt in the tokenizer's chat template.")]
MaxNewTokensOption = Annotated[
    int | None,
    typer.Option("--max-new-tokens", "-n", min=1, help="Tokens to generate (default: the model's, else 64)."),
]
TemperatureOption = Annotated[
    float, typer.Option("--temperature", "-t", min=0.0, help="0 = greedy (default); > 0 samples.")
]
TopKOption = Annotated[int | None, typer.Option("--top-k", min=1, help="Sample from the k most likely tokens.")]
TopPOption = Annotated[float | None, typer.Option("--top-p", help="Nucleus sampling mass, in (0, 1].")]
StopOption = Annotated[list[str] | None, typer.Option("--stop", help="Cut the completion at this string; repeatable.")]
DtypeOption = Annotated[str, typer.Option("--dtype", help=f"Weights dtype: {', '.join(DTYPE_NAMES)}.")]
DeviceMapOption = Annotated[
    str | None,
    typer.Option(
        "--device-map", help="'auto' spreads a large model over GPUs/CPU (pip install 'aim-cli\\[accelerate]')."
    ),
]
OutputOption = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write .jsonl (or .csv) records instead of text.")
]


@app.command()
def generate(
    prompt: PromptOption = None,
    prompts_file: PromptsFileOption = None,
    model: LanguageModelOption = None,
    chat: ChatOption = False,
    profile: ProfileOption = None,
    sigma: SigmaOption = None,
    focus: WordFocusOption = None,
    focus_sigma: FocusSigmaOption = None,
    seed: SeedOption = None,
    max_new_tokens: MaxNewTokensOption = None,
    temperature: TemperatureOption = 0.0,
    top_k: TopKOption = None,
    top_p: TopPOption = None,
    stop: StopOption = None,
    batch_size: BatchOption = 8,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    device_map: DeviceMapOption = None,
    output: OutputOption = None,
    compare: CompareOption = False,
    resume: ResumeOption = False,
    quiet: QuietOption = False,
) -> None:
    """Generate text with a modulated causal or encoder-decoder LM (default: the demo arithmetic LM)."""
    from aim_cli.api.generation import generate as generate_completions

    settings = profile_from_options(profile, sigma, focus, focus_sigma, seed)
    if output is None:
        require_stdout("completions")
    failures: list[FailedInput] = []
    advance: list[Callable[[int], None]] = []  # the progress bar's, once it is shown
    run = generate_completions(
        model,
        _prompts(prompt, prompts_file),
        settings,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        stop=tuple(stop or ()),
        chat=chat,
        compare=compare,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        device_map=device_map,
        output=output,
        resume=resume,
        stream=_write if output is None and not compare else None,
        progress=lambda done: advance[0](done),
        notice=lambda note: say(note, quiet),
        failures=failures,
    )
    results = _collect(run, quiet, advance)
    if output is None and results and not run.streaming:
        _print_results(results, compare)
    report_failures(failures, bool(results))


def _prompts(given: list[str] | None, prompts_file: Path | None) -> list[str | Path] | TextIO:
    """The prompts as the API takes them: --prompt texts then the --prompts file; with neither, standard input."""
    prompts: list[str | Path] = [*(given or []), *([prompts_file] if prompts_file is not None else [])]
    return prompts or sys.stdin


def _write(text: str) -> None:
    """Write streamed text to stdout at once."""
    sys.stdout.write(text)
    sys.stdout.flush()


def _collect(run: Generation, quiet: bool, advance: list[Callable[[int], None]]) -> list[Completion]:
    """Every completion of the run: a single prompt streamed to stdout as generated, else behind a progress bar.

    The run is closed however this ends: a signal that lands here, between two completions, still
    ends its writing (finished records kept for --resume).
    """
    with closing(run):
        if run.streaming:
            advance.append(lambda _done: None)  # no bar: it would hold back the streamed text
            results = []
            with writing_stdout():
                for item in run:
                    _write("\n")  # the completion is whole: end its line (a failed prompt yields nothing)
                    results.append(item)
            return results
        with progress_bar("generating", len(run), quiet or not len(run)) as bar:
            advance.append(bar)
            return list(run)


def _print_results(results: list[Completion], compare: bool) -> None:
    """Two labelled lines for one prompt; a table for several (on stdout)."""
    with writing_stdout():
        _print_table(results, compare)


def _print_table(results: list[Completion], compare: bool) -> None:
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
