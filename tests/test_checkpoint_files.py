"""Checkpoint folders are untrusted: any value in their JSON loads or is refused in one line.

The reported cases (a 100000 x 100000 resize, a timm input_size of 100000, strings where numbers
belong, a chat template repeating the message 10^8 times) and a hypothesis sweep over every
family of the compatibility table run the real CLI in a child process under a 6 GB address-space
limit: each run exits 0, or 2 with one `aim: error:` line (in the sweep also 1, when in-bound
settings overflow the random model and each input fails alone with "non-finite logits"); never 3,
a traceback or a kill. An image the model's resize would blow up fails alone (exit 1).
One child runs a whole batch of cases (torch is imported once), reporting each as a JSON line.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

from aim_cli.models.checkpoint_files import Resize, processed_size, timm_resize
from tests.compatibility_families import FAMILIES, GENERATE, SEGMENT, Family

ROOT = Path(__file__).resolve().parents[1]
MEMORY = 6 * 1024**3  # the child's address space: ample for tiny models, far below a 30 GB allocation
# Runs aim's entry point once per case in one process; a kill or a native abort ends the batch.
DRIVER = r"""
import contextlib, io, json, os, sys
from aim_cli.cli import main
out = sys.stdout
for case in json.load(open(sys.argv[1])):
    err = io.StringIO()
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(err):
        try:
            main(case["args"] + ["--device", "cpu", "--quiet"])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out.write(json.dumps({"id": case["id"], "code": code, "err": err.getvalue()}) + "\n")
    out.flush()
"""


def _limit_memory() -> None:
    """preexec_fn: cap the child's address space, so a runaway allocation fails instead of swapping."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def run_batch(cases: list[dict[str, Any]], work: Path, timeout: float = 600) -> dict[str, dict[str, Any]]:
    """Run every case's CLI arguments in one memory-capped child; results by case id (a dead child fails)."""
    (work / "out").mkdir(exist_ok=True)
    listing = work / "cases.json"
    listing.write_text(json.dumps(cases), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("AIM_DEBUG", None)
    child = subprocess.run(
        [sys.executable, "-c", DRIVER, str(listing)],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
        preexec_fn=_limit_memory,
        timeout=timeout,
    )
    results = {record["id"]: record for record in map(json.loads, child.stdout.splitlines())}
    finished = [case["id"] for case in cases if case["id"] in results]
    assert len(finished) == len(cases), (
        f"the child died (exit {child.returncode}) after {finished[-3:]} on case "
        f"{cases[len(finished)]['id']}: {child.stderr[-2000:]}"
    )
    return results


def assert_loaded_or_refused(result: dict[str, Any], what: Any = "", nonfinite: bool = False) -> None:
    """Exit 0, or exit 2 with exactly one `aim: error:` line; nothing else.

    With `nonfinite`, exit 1 is accepted too when every input failed alone because the model
    computed NaN/inf logits: settings in their bounds may still overflow a random tiny model, and
    the model-output check reports that per input (one `aim: failed:` line each).
    """
    err = result["err"]
    assert "Traceback" not in err and "internal error" not in err, (what, err[-1500:])
    lines = err.strip().splitlines()
    if nonfinite and result["code"] == 1:
        failed = [line for line in lines if line.startswith("aim: failed:")]
        summary = [line for line in lines if not line.startswith("aim: failed:")]
        assert failed and all("non-finite logits" in line for line in failed), (what, err[-1500:])
        assert len(summary) == 1 and ("input(s) failed" in summary[0] or "no input succeeded" in summary[0]), err
        return
    assert result["code"] in (0, 2), (what, result["code"], err[-1500:])
    if result["code"] == 2:
        assert len(lines) == 1 and lines[0].startswith("aim: error:"), (what, err[-1500:])


def assert_refused(result: dict[str, Any], *words: str) -> None:
    """Exit 2 with one line that contains every word."""
    assert result["code"] == 2, result
    assert_loaded_or_refused(result)
    for word in words:
        assert word in result["err"], (word, result["err"])


# --- tiny checkpoints ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A work folder with images/ holding two small RGB images.

    Two, as in the compatibility test: the tiny OneFormer's group norms need a batch of two at 1x1.
    """
    folder = tmp_path_factory.mktemp("checkpoint_files")
    (folder / "images").mkdir()
    rng = np.random.default_rng(0)
    for index in range(2):
        Image.fromarray(rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)).save(
            folder / "images" / f"im{index}.png"
        )
    return folder


_BUILT: dict[str, tuple[Path, list[str]]] = {}


def built(family: Family, work: Path) -> tuple[Path, list[str]]:
    """The family's tiny checkpoint (built once per session) and its CLI model arguments."""
    if family.slug not in _BUILT:
        folder = work / "families" / family.slug
        _BUILT[family.slug] = (folder, family.build(folder))
    return _BUILT[family.slug]


def cli_args(family_task: str, model: list[str], work: Path, name: str, chat: bool = False) -> list[str]:
    """The command that loads the model and runs it once: two images or one short prompt."""
    output = ["-o", str(work / "out" / (name if family_task == SEGMENT else f"{name}.jsonl"))]
    if family_task == GENERATE:
        return ["generate", *model, "--prompt", "12+7=", "-n", "2", *(["--chat"] if chat else []), *output]
    return [family_task, str(work / "images"), *model, *output]


def mutated(family: Family, work: Path, name: str, edits: list[tuple[str, tuple[Any, ...], Any]]) -> list[str]:
    """A copy of the family's checkpoint with (file, key path, value) edits; returns its model arguments."""
    source, model = built(family, work)
    target = work / "mutants" / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    for file, path, value in edits:
        data = json.loads((target / file).read_text(encoding="utf-8"))
        node = data
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):  # an earlier edit may have replaced the parent
            node[path[-1]] = value
        (target / file).write_text(json.dumps(data), encoding="utf-8")  # NaN and Infinity as JSON5-style literals
    return [str(target) if arg == str(source) else arg for arg in model]


# --- the reported cases -------------------------------------------------------------------------


def _family(slug: str) -> Family:
    return next(family for family in FAMILIES if family.slug == slug)


REPEATING_TEMPLATE = "{% for m in messages %}{{ m['content'] * 100000000 }}{% endfor %}"
REPORTED = {
    "size-100000": (
        "classify-vit",
        "preprocessor_config.json",
        ("size",),
        {"height": 100000, "width": 100000},
        ("preprocessor_config.json", "'size'", "AIM_MAX_INPUT_PIXELS"),
    ),
    "timm-input-size": (
        "classify-timm-hugging-face-layout",
        "config.json",
        ("pretrained_cfg", "input_size"),
        [3, 100000, 100000],
        ("config.json", "'pretrained_cfg.input_size'", "AIM_MAX_INPUT_PIXELS"),
    ),
    "image-mean-string": (
        "classify-vit",
        "preprocessor_config.json",
        ("image_mean",),
        "x",
        ("preprocessor_config.json", "'image_mean'"),
    ),
    "timm-input-size-string": (
        "classify-timm-hugging-face-layout",
        "config.json",
        ("pretrained_cfg", "input_size"),
        "huge",
        ("config.json", "'pretrained_cfg.input_size'"),
    ),
    "chat-template-10e8": (
        "generate-llama",
        "tokenizer_config.json",
        ("chat_template",),
        REPEATING_TEMPLATE,
        ("chat template", "AIM_MAX_PROMPT_CHARS"),
    ),
    # Found by the slow sweep: a null crop_pct replaces ConvNeXt's default and its resize divides by it.
    "crop-pct-null": (
        "classify-cvt",
        "preprocessor_config.json",
        ("crop_pct",),
        None,
        ("preprocessor_config.json", "'crop_pct'"),
    ),
    # Found by the slow sweep: a forced token indexes the logits, so it must be in the vocabulary.
    "forced-eos-past-vocab": (
        "generate-bart",
        "generation_config.json",
        ("forced_eos_token_id",),
        1_000_000_000,
        ("generation_config.json", "'forced_eos_token_id'", "vocabulary"),
    ),
}


@pytest.fixture(scope="module")
def reported(work) -> dict[str, dict[str, Any]]:
    """The CLI's result on each reported case, run in one memory-capped child."""
    cases = []
    for name, (slug, file, path, value, _) in REPORTED.items():
        family = _family(slug)
        model = mutated(family, work, name, [(file, path, value)])
        cases.append({"id": name, "args": cli_args(family.task, model, work, name, chat=slug.startswith("generate"))})
    return run_batch(cases, work)


@pytest.mark.parametrize("name", list(REPORTED))
def test_reported_case_is_refused_in_one_line_naming_file_and_key(name, reported):
    pytest.importorskip("timm")
    assert_refused(reported[name], *REPORTED[name][4])


# --- the processed size of each image ------------------------------------------------------------


@pytest.mark.parametrize(
    "resize, size, expected",
    [
        (Resize(shortest=224), (20000, 1), (224, 4_480_000)),
        (Resize(shortest=800, longest=1333), (2000, 100), (67, 1333)),
        (Resize(longest=512), (1024, 256), (128, 512)),
        (Resize(height=32, width=32), (20000, 1), (32, 32)),
        (Resize(height=100, width=200, fit="within"), (400, 400), (100, 100)),
        (Resize(height=100, width=200, fit="cover"), (400, 400), (200, 200)),
        (Resize(height=384, width=384, fit="nearest"), (1000, 500), (384, 768)),  # DPT: the scale closer to 1
        (Resize(shortest=30, multiple=32), (60, 30), (32, 64)),
        (Resize(), (640, 480), (480, 640)),
        (timm_resize({"input_size": (3, 224, 224), "crop_pct": 0.875}), (20000, 1), (256, 5_120_000)),
        (timm_resize({"input_size": (3, 224, 224), "crop_pct": 1.0, "crop_mode": "squash"}), (20000, 1), (224, 224)),
    ],
)
def test_processed_size_follows_each_resize_rule(resize, size, expected):
    assert tuple(round(edge) for edge in processed_size(resize, *size)) == expected


def test_wide_image_fails_alone_when_the_resize_would_blow_it_up(work, tmp_path):
    """shortest_edge 224 is sane, but resizes a 20000 x 1 image to 4,480,000 x 224 (12 GB of floats).

    Checked per image before preprocessing: the wide image fails in one line naming it and the
    bound's variable, its batch-mate is classified (exit 1); under the child's 6 GB limit a
    missing check shows as an internal error or a dead child, not a machine out of memory.
    """
    model = mutated(
        _family("classify-dinov2"),
        work,
        "wide",
        [
            ("preprocessor_config.json", ("size",), {"shortest_edge": 224}),
        ],
    )
    images = tmp_path / "batch"
    images.mkdir()
    Image.new("RGB", (20000, 1), (90, 120, 30)).save(images / "wide.png")
    Image.new("RGB", (64, 48), (200, 10, 60)).save(images / "normal.png")
    output = tmp_path / "out.jsonl"
    result = run_batch([{"id": "wide", "args": ["classify", str(images), *model, "-o", str(output)]}], work)["wide"]
    failed = [line for line in result["err"].splitlines() if line.startswith("aim: failed:")]
    assert result["code"] == 1 and "Traceback" not in result["err"], result
    assert len(failed) == 1 and "wide.png" in failed[0] and "AIM_MAX_INPUT_PIXELS" in failed[0], result["err"]
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [Path(record["path"]).name for record in records] == ["normal.png"], records


# --- the fuzzed sweep ---------------------------------------------------------------------------

# Files whose values are fuzzed, and for config.json the keys (labels, and what loaders read).
_CONFIG_KEYS = (
    "id2label",
    "label2id",
    "num_labels",
    "num_classes",
    "label_names",
    "image_size",
    "vocab_size",
    "max_position_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
)
FUZZED = st.one_of(
    st.sampled_from([10**5, 10**9, 10**18, -1, -(10**9), 0, 1, True, None, math.nan, math.inf, -math.inf, 1e-300]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=6),
    st.lists(st.sampled_from([0, 1, 3, 10**5, -1, "x", None, 0.5]), max_size=4),
    st.just({"a": {"b": [1]}}),
    st.dictionaries(
        st.sampled_from(["height", "width", "shortest_edge", "0", "x"]),
        st.sampled_from([1, 10**5, -3, "x", None]),
        max_size=3,
    ),
    st.floats(allow_nan=True, allow_infinity=True),
)


def _leaf_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a JSON object (dicts only; a list is replaced whole)."""
    paths = []
    if isinstance(node, dict):
        for key, value in node.items():
            paths.append((*prefix, key))
            paths.extend(_leaf_paths(value, (*prefix, key)))
    return paths


def fuzz_targets(folder: Path) -> list[tuple[str, tuple[Any, ...]]]:
    """(file, key path) pairs of a checkpoint that the sweep may replace."""
    targets = []
    for file in ("preprocessor_config.json", "generation_config.json"):
        if (folder / file).is_file():
            targets += [(file, path) for path in _leaf_paths(json.loads((folder / file).read_text(encoding="utf-8")))]
    if (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        targets += [
            ("config.json", path)
            for path in _leaf_paths(config)
            if path[0] in _CONFIG_KEYS or path[0] == "pretrained_cfg"
        ]
    return targets


def _fuzzable() -> list[Family]:
    """Families whose checkpoint is a folder of JSON settings (not torchvision:/timm: with --weights)."""
    return [family for family in FAMILIES if not family.slow and family.requires in ("", "timm", "scipy")]


def _sweep(data: st.DataObject, work: Path, per_family: int) -> None:
    """Draw `per_family` edited checkpoints per family and run them all in one memory-capped child."""
    cases, edits_of = [], {}
    for family in _fuzzable():
        if family.requires:
            pytest.importorskip(family.requires)
        folder, _model = built(family, work)
        targets = fuzz_targets(folder)
        if not targets:
            continue  # torchvision:/timm: with --weights: nothing read from a settings file
        for index in range(per_family):
            count = data.draw(st.integers(1, 3), label=f"{family.slug} edits")
            edits = [
                (*data.draw(st.sampled_from(targets), label="target"), data.draw(FUZZED, label="value"))
                for _ in range(count)
            ]
            name = f"{family.slug}-{index}"
            edits_of[name] = edits
            cases.append({"id": name, "args": cli_args(family.task, mutated(family, work, name, edits), work, name)})
    results = run_batch(cases, work)
    for name, result in results.items():
        assert_loaded_or_refused(result, (name, edits_of[name]), nonfinite=True)


# No shrinking: each example is one child running every family; the failing case's edits are in the message.
# Derandomized: every run (and CI) draws the same cases, so a failure reproduces; each test draws its own.
SWEEP = settings(
    deadline=None, suppress_health_check=list(HealthCheck), phases=[Phase.generate], derandomize=True, database=None
)


@settings(SWEEP, max_examples=2)
@given(data=st.data())
def test_fuzzed_settings_of_every_family_load_or_are_refused_in_one_line(data, work):
    _sweep(data, work, per_family=2)


@pytest.mark.slow
@settings(SWEEP, max_examples=8)
@given(data=st.data())
def test_fuzzed_settings_sweep_more_examples(data, work):
    _sweep(data, work, per_family=4)
