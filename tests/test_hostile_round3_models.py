"""Hostile pass, round 3, model side: counts a checkpoint file states, and model-source plugins.

The cases are the table in tests/data/hostile_round3/models.md. Two classes, each with a table
test and a property test that would catch the next case of it:
- every reader of a checkpoint file holds a count it reads (labels, rows, tensors, ids) to its bound
  before anything is sized by it: one line, exit 2, and memory far below what the count would take;
- every call into a plugin ends, whatever the plugin does, in aim's own error naming it (exit 2).
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aim_cli.errors import ModelError
from aim_cli.models.plugins import ENTRY_POINT_GROUP
from aim_cli.models.registry import load_model
from aim_cli.models.weights import labels_from_json, labels_from_value, load_state_dict, read_labels_file
from tests.conftest import REPO, aim_env, run_aim

CPU = torch.device("cpu")
SAMPLE = REPO / "aim_cli" / "demo" / "samples" / "classify" / "circle_0.png"
BOUND = 1_000_000  # AIM_MAX_LABELS' default
SMALL = 1000  # the bound the table of readers runs under (AIM_MAX_LABELS), to stay fast


def _save(path: Path, tensors: dict[str, torch.Tensor], **metadata: str) -> Path:
    """A safetensors file with these tensors and metadata."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata or None)
    return path


def _one_line(error: ModelError) -> str:
    """The error as the CLI prints it, asserted to be one line with exit code 2."""
    text = str(error)
    assert "\n" not in text and error.exit_code == 2, text
    return text


# --- class 4: counts from files, bounded before allocation ---------------------------------------


def _labels_json(count: int) -> str:
    return json.dumps([f"c{i}" for i in range(count)])


def _resnet_head(classes: int) -> dict[str, torch.Tensor]:
    """resnet18's tensors with a head of `classes` rows (the rest from a meta build, zero-filled)."""
    import torchvision

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.resnet18(num_classes=classes).state_dict().items()}
    return {
        k: torch.zeros(shape, dtype=torch.int64 if k.endswith("num_batches_tracked") else torch.float32)
        for k, shape in shapes.items()
    }


# (case id, builds the input under tmp_path and loads it, a fragment the one-line error must hold)
READERS: list[tuple[str, Callable[[Path], Any], str]] = [
    (
        "W01 safetensors: no tensors, labels over the bound",
        lambda d: load_state_dict(_save(d / "w.safetensors", {}, labels=_labels_json(SMALL + 1))),
        "lists more than 1,000 classes",
    ),
    (
        "W02 safetensors: id2label mapping over the bound",
        lambda d: load_state_dict(
            _save(d / "w.safetensors", {}, id2label=json.dumps({str(i): "x" for i in range(SMALL + 1)}))
        ),
        "more than 1,000 classes",
    ),
    (
        "W03 safetensors: a class id past the bound",
        lambda d: load_state_dict(_save(d / "w.safetensors", {}, id2label='{"999999999999": "x"}')),
        "is not an integer from 0 to 999",
    ),
    (
        "W04 safetensors: a negative class id",
        lambda d: load_state_dict(_save(d / "w.safetensors", {}, id2label='{"-1": "x"}')),
        "is not an integer from 0",
    ),
    (
        "W05 safetensors: a label that is a number",
        lambda d: load_state_dict(_save(d / "w.safetensors", {}, labels="[1, 2]")),
        "the name of class 0 is 1, not a string",
    ),
    (
        "W06 safetensors: labels nested 100,000 deep",
        lambda d: load_state_dict(_save(d / "w.safetensors", {}, labels="[" * 100_000 + "]" * 100_000)),
        "",
    ),
    (
        "W07 safetensors: labels that are a number",
        lambda d: load_state_dict(_save(d / "w.safetensors", {}, labels="1e999")),
        "expected a list of class names",
    ),
    (
        "W08 safetensors: an empty label list",
        lambda d: load_state_dict(_save(d / "w.safetensors", {}, labels="[]")),
        "names no classes",
    ),
    (
        "W09 safetensors: a class id given twice",
        lambda d: load_state_dict(_save(d / "w.safetensors", {}, id2label='{"0": "a", "00": "b"}')),
        "class id 0 is given twice",
    ),
    (
        "W10 .pth: a label list over the bound",
        lambda d: load_state_dict(_pth(d, {"w": torch.zeros(1), "labels": [f"c{i}" for i in range(SMALL + 1)]})),
        "lists 1,001 classes",
    ),
    (
        "W11 .pth: id2label with keys that are not ids",
        lambda d: load_state_dict(_pth(d, {"w": torch.zeros(1), "id2label": {"cat": "dog"}})),
        "is not an integer",
    ),
    (
        "W12 labels file (.txt) over the bound",
        lambda d: read_labels_file(_write(d / "l.txt", "\n".join(f"c{i}" for i in range(SMALL + 1)))),
        "lists 1,001 classes",
    ),
    (
        "W13 labels file (.json) over the bound",
        lambda d: read_labels_file(_write(d / "l.json", _labels_json(SMALL + 1))),
        "1,001 classes",
    ),
    (
        "W14 an empty 10^9 x 0 head tensor (rows are a count the file states)",
        lambda d: load_model(
            "classify",
            "torchvision:resnet18",
            device=CPU,
            weights=_save(d / "w.safetensors", {"fc.weight": torch.zeros(10**9, 0)}),
        ),
        "fc.weight has 1,000,000,000 output rows",
    ),
    (
        "W15 torchvision classifier: no tensors, labels under the bound",
        lambda d: load_model(
            "classify",
            "torchvision:resnet18",
            device=CPU,
            weights=_save(d / "w.safetensors", {}, labels=_labels_json(900)),
        ),
        "102 tensor(s) missing",
    ),
    (
        "W16 torchvision segmenter: no tensors, labels under the bound",
        lambda d: load_model(
            "segment",
            "torchvision:lraspp_mobilenet_v3_large",
            device=CPU,
            weights=_save(d / "w.safetensors", {}, labels=_labels_json(500)),
        ),
        "tensor(s) missing",
    ),
    (
        "W16b timm architecture: no tensors, labels under the bound",
        lambda d: load_model(
            "classify", "timm:resnet18", device=CPU, weights=_save(d / "w.safetensors", {}, labels=_labels_json(900))
        ),
        "tensor(s) missing",
    ),
    (
        "W16c timm checkpoint folder: label_names that are not names",
        lambda d: load_model("classify", str(_timm_folder(d, {"label_names": [1, 2]})), device=CPU),
        "the name of class 0 is 1, not a string",
    ),
    (
        "W17 torchvision classifier: head rows and labels disagree",
        lambda d: load_model(
            "classify",
            "torchvision:resnet18",
            device=CPU,
            weights=_save(d / "w.safetensors", _resnet_head(3), labels='["a", "b"]'),
        ),
        "names 2 classes but the model has 3 outputs",
    ),
    (
        "W18 a tensor shaped unlike the architecture's",
        lambda d: load_model(
            "classify",
            "torchvision:resnet18",
            device=CPU,
            weights=_save(d / "w.safetensors", {**_resnet_head(3), "conv1.weight": torch.zeros(64, 3, 3, 3)}),
        ),
        "size mismatch for conv1.weight",
    ),
    (
        "W19 more tensors than the bound",
        lambda d: _with_env(
            {"AIM_MAX_TENSORS": "100"},
            lambda: load_state_dict(_save(d / "w.safetensors", {f"t{i}": torch.zeros(1) for i in range(101)})),
        ),
        "holds 101 tensors, over the bound",
    ),
    (
        "W20 safetensors header length that lies",
        lambda d: load_state_dict(_write_bytes(d / "w.safetensors", (2**62).to_bytes(8, "little") + b"{}")),
        "is not a valid safetensors file",
    ),
    (
        "W21 safetensors header claiming a tensor past the file's end",
        lambda d: load_state_dict(_lying_header(d / "w.safetensors")),
        "is not a valid safetensors file",
    ),
]


def _timm_folder(folder: Path, config: dict[str, Any]) -> Path:
    """A timm checkpoint in Hugging Face layout: config.json naming resnet18, and an empty weights file."""
    (folder / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 2, **config}))
    _save(folder / "model.safetensors", {})
    return folder


def _pth(folder: Path, obj: object) -> Path:
    path = folder / "w.pth"
    torch.save(obj, str(path))
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _lying_header(path: Path) -> Path:
    """A header declaring a 10^6-element float tensor in a file holding 8 bytes of data."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}).encode()
    return _write_bytes(path, len(header).to_bytes(8, "little") + header + b"\0" * 8)


def _with_env(env: dict[str, str], call: Callable[[], Any]) -> Any:
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        return call()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.mark.parametrize(("case", "build", "expected"), READERS, ids=[case[0].split()[0] for case in READERS])
def test_every_reader_holds_a_count_from_a_file_to_its_bound(tmp_path, monkeypatch, case, build, expected):
    monkeypatch.setenv("AIM_MAX_LABELS", str(SMALL))
    with pytest.raises(ModelError) as caught:
        build(tmp_path)
    assert expected in _one_line(caught.value), case


_PEAK = """
import resource, sys, torch, torchvision
from pathlib import Path
from aim_cli.errors import ModelError
from aim_cli.models.registry import load_model
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for weights in sys.argv[1:]:
    try:
        load_model("classify", "torchvision:resnet18", device=torch.device("cpu"), weights=Path(weights))
    except ModelError as exc:
        print(str(exc).replace(chr(10), " "))
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_a_label_count_sizes_nothing_before_it_is_checked(tmp_path):
    """The issue's case (5,000,000 labels, no tensors) and one under the bound (900,000): a resnet18 head
    that wide is count x 512 floats (10 GB and 1.8 GB); memory grows by the metadata alone."""
    over = _save(tmp_path / "over.safetensors", {}, labels=_labels_json(5_000_000))
    under = _save(tmp_path / "under.safetensors", {}, labels=_labels_json(900_000))
    result = subprocess.run(
        [sys.executable, "-c", _PEAK, str(over), str(under)],
        capture_output=True,
        text=True,
        env=aim_env(),
        timeout=600,
    )
    refused_over, grown_over, refused_under, grown_under = result.stdout.strip().splitlines()
    assert "lists more than 1,000,000 classes" in refused_over, result.stdout + result.stderr
    assert "102 tensor(s) missing" in refused_under, result.stdout + result.stderr
    # Growth over the imports (MB): the metadata itself (tens of MB), never the network the count describes.
    assert int(grown_over) < 400 and int(grown_under) < 400, result.stdout


def test_the_cli_refuses_the_issue_file_in_one_line(tmp_path):
    weights = _save(tmp_path / "w.safetensors", {}, labels=_labels_json(BOUND + 1))
    result = run_aim("classify", "--model", "torchvision:resnet18", "--weights", str(weights), str(SAMPLE))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "AIM_MAX_LABELS" in lines[0], result.stderr


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner, max_size=5),
        max_leaves=20,
    )
)
@example({"²": None})  # str.isdigit() is true for '²', and int() refused it (found in CI)
@example({"٣": "cat"})
def test_any_label_value_is_a_list_of_names_or_one_line(value):
    """Whatever JSON a file stores as its labels: a list of strings within the bound, or a one-line ModelError."""
    try:
        names = labels_from_json(json.dumps(value), "metadata")
    except ModelError as exc:
        _one_line(exc)
        return
    assert 1 <= len(names) <= BOUND and all(isinstance(name, str) for name in names)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=40), st.integers(min_value=0, max_value=40))
def test_a_count_over_a_lowered_bound_is_refused_whatever_its_spelling(bound, count):
    """List, mapping, labels file: exactly the counts over AIM_MAX_LABELS are refused."""
    names = [f"n{i}" for i in range(count)]
    spellings = [json.dumps(names), json.dumps({str(i): name for i, name in enumerate(names)})]
    for text in spellings:
        over = _with_env({"AIM_MAX_LABELS": str(bound)}, lambda text=text: _outcome(text))
        assert over == (count > bound or count == 0), (bound, count, text[:60])


def _outcome(text: str) -> bool:
    try:
        labels_from_json(text, "metadata")
    except ModelError:
        return True
    return False


def test_labels_saved_beside_a_flat_state_dict_are_read_not_taken_for_tensors(tmp_path):
    state, labels = load_state_dict(_pth(tmp_path, {"w": torch.zeros(2), "labels": ["a", "b"]}))
    assert list(state) == ["w"] and labels == ["a", "b"]


def test_id2label_with_a_gap_names_the_gap_instead_of_shifting_classes():
    assert labels_from_value({"0": "a", "2": "c"}, "x") == ["a", "class_1", "c"]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"num_labels": 5, "id2label": {"0": "a", "1": "b", "2": "c"}}, "'num_labels' is 5 but 'id2label' names 3"),
        ({"id2label": {"0": "a", "2": "c"}}, "none for 1"),
        ({"id2label": {"0": "a", "00": "b"}}, "an id given twice"),
        ({"num_labels": 10**12}, "'num_labels' is 1000000000000"),
        ({"vocab_size": 10**12}, "'vocab_size' is 1000000000000"),
        ({"id2label": {"0": 7}}, "a class name (a string)"),
    ],
)
def test_a_checkpoint_config_with_inconsistent_counts_is_refused(tmp_path, config, expected):
    from aim_cli.models.checkpoint_files import check_checkpoint

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit", **config}))
    with pytest.raises(ModelError) as caught:
        check_checkpoint(str(tmp_path))
    assert expected in _one_line(caught.value)


# --- the structure that keeps class 4 closed ---------------------------------------------------------

MODELS = REPO / "aim_cli" / "models"
# The only places in models/ that parse JSON: each bounds what it parses.
_BOUNDED_JSON = {
    ("weights.py", "labels_from_json"),
    ("weights.py", "read_labels_file"),
    ("checkpoint_files.py", "read_json"),
}


def _functions(tree: ast.AST) -> list[ast.FunctionDef]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]


def test_models_parse_json_only_through_bounded_readers():
    found = set()
    for path in MODELS.glob("*.py"):
        for function in _functions(ast.parse(path.read_text())):
            for node in ast.walk(function):
                if isinstance(node, ast.Call) and ast.unparse(node.func) in ("json.loads", "json.load"):
                    found.add((path.name, function.name))
    assert found <= _BOUNDED_JSON, found - _BOUNDED_JSON


def test_a_network_is_sized_by_labels_only_after_the_weights_are_checked_to_fill_it():
    """Every call building a network with num_classes (outside a meta-device build) follows a check_fits call."""
    for path in MODELS.glob("*.py"):
        tree = ast.parse(path.read_text())
        for function in _functions(tree):
            if function.name == "_build" and path.name == "segmenter.py":
                continue  # the builder itself: its callers are checked
            lambdas = {id(n) for lam in ast.walk(function) if isinstance(lam, ast.Lambda) for n in ast.walk(lam)}
            checks = [
                n.lineno for n in ast.walk(function) if isinstance(n, ast.Call) and ast.unparse(n.func) == "check_fits"
            ]
            for node in ast.walk(function):
                if id(node) in lambdas or not isinstance(node, ast.Call):
                    continue
                sized = any(k.arg == "num_classes" for k in node.keywords) or ast.unparse(node).startswith(
                    "_build(arch, len(labels))"
                )
                if sized:
                    assert any(line < node.lineno for line in checks), f"{path.name}:{node.lineno} {ast.unparse(node)}"


# --- class 5: plugins, named whatever they do ---------------------------------------------------------

_GOOD_LOAD = """
    def load(self, request):
        import torch
        from aim_cli.models.image_model import ImageModel
        return ImageModel("odd", ["a", "b"], request.device, torch.nn.Identity(),
                          lambda images: torch.zeros(len(images), 2), task="classify")
"""


def _source(body: str, header: str = "", tasks: str = "tasks = ('classify',)\n    takes_weights = False\n") -> str:
    """A plugin module: `header` at module level, a class Source with `tasks` and `body`."""
    return textwrap.dedent(header) + "\nclass Source:\n    " + tasks + textwrap.indent(textwrap.dedent(body), "    ")


def _install(root: Path, name: str, module: str, package: str = "aimzoo-odd", target: str = "Source") -> None:
    """A module and a dist-info declaring it under aim's entry-point group."""
    module_name = package.replace("-", "_")
    (root / f"{module_name}.py").write_text(module)
    info = root / f"{module_name}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name} = {module_name}:{target}\n")


@pytest.fixture
def fresh(monkeypatch):
    """monkeypatch, with the fake plugin modules forgotten before and after (each test installs its own)."""
    import importlib

    for name in [name for name in sys.modules if name.startswith("aimzoo_")]:
        monkeypatch.delitem(sys.modules, name)
    importlib.invalidate_caches()
    yield monkeypatch
    for name in [name for name in sys.modules if name.startswith("aimzoo_")]:
        del sys.modules[name]


# (case id, the plugin module, the task, the step and fragment the one-line error must hold)
PLUGINS: list[tuple[str, str, str, str]] = [
    (
        "P01 raises in load()",
        _source("def load(self, request):\n    raise RuntimeError('zoo is closed')\n"),
        "classify",
        "failed in load(): RuntimeError: zoo is closed",
    ),
    (
        "P02 lacks tasks",
        _source(_GOOD_LOAD, tasks="takes_weights = False\n"),
        "classify",
        "failed in tasks: AttributeError",
    ),
    (
        "P03 recurses in load()",
        _source("def load(self, request):\n    return self.load(request)\n"),
        "classify",
        "failed in load(): RecursionError",
    ),
    (
        "P04 fails in its constructor",
        _source("def __init__(self):\n    raise ValueError('no config')\n" + _GOOD_LOAD),
        "classify",
        "failed in its constructor: ValueError: no config",
    ),
    (
        "P05 calls sys.exit(0) in load()",
        _source("def load(self, request):\n    import sys; sys.exit(0)\n"),
        "classify",
        "failed in load(): it called sys.exit(0)",
    ),
    (
        "P06 calls sys.exit(0) on import",
        _source(_GOOD_LOAD, header="import sys\nsys.exit(0)\n"),
        "classify",
        "failed in import: it called sys.exit(0)",
    ),
    (
        "P07 raises KeyboardInterrupt itself",
        _source("def load(self, request):\n    raise KeyboardInterrupt\n"),
        "classify",
        "failed in load(): KeyboardInterrupt",
    ),
    (
        "P08 raises aim's Interrupted itself",
        _source("def load(self, request):\n    from aim_cli.errors import Interrupted\n    raise Interrupted(2)\n"),
        "classify",
        "failed in load(): Interrupted",
    ),
    (
        "P09 tasks is a string",
        _source(_GOOD_LOAD, tasks="tasks = 'classify'\n    takes_weights = False\n"),
        "classify",
        "failed in tasks: it is str",
    ),
    (
        "P10 tasks is a property that raises",
        _source(
            _GOOD_LOAD,
            tasks="@property\n    def tasks(self):\n        raise OSError('gone')\n    takes_weights = False\n",
        ),
        "classify",
        "failed in tasks: OSError: gone",
    ),
    (
        "P11 takes_weights is a string",
        _source(_GOOD_LOAD, tasks="tasks = ('classify',)\n    takes_weights = 'no'\n"),
        "classify",
        "failed in takes_weights: it is str",
    ),
    (
        "P12 load() returns None",
        _source("def load(self, request):\n    return None\n"),
        "classify",
        "failed in load(): it returned NoneType, not an image model",
    ),
    (
        "P13 labels that are not strings",
        _source(_GOOD_LOAD.replace('["a", "b"]', "[1, 2]")),
        "classify",
        "labels include int 1, not a name",
    ),
    (
        "P14 labels over the bound",
        _source(_GOOD_LOAD.replace('["a", "b"]', '["a"] * 1_000_001')),
        "classify",
        "its model has 1,000,001 labels",
    ),
    ("P15 no labels", _source(_GOOD_LOAD.replace('["a", "b"]', "[]")), "classify", "its model has 0 labels"),
    (
        "P16 a model whose labels property raises",
        _source(
            "def load(self, request):\n    class M:\n        name = 'm'\n        device = request.device\n"
            "        preprocess = None\n        def logits(self, images): pass\n        @property\n"
            "        def labels(self):\n            raise ZeroDivisionError('x')\n    return M()\n"
        ),
        "classify",
        "failed in checking what load() returned: ZeroDivisionError",
    ),
    (
        "P17 raises an AimError whose exit code is 0",
        _source(
            "def load(self, request):\n    from aim_cli.errors import ModelError\n"
            "    class Quiet(ModelError):\n        exit_code = 0\n    raise Quiet('line one\\nline two')\n"
        ),
        "classify",
        "failed in load(): Quiet: line one line two",
    ),
    (
        "P18 raises an exception that cannot be printed",
        _source(
            "def load(self, request):\n    class E(Exception):\n"
            "        def __str__(self):\n            raise TypeError\n"
            "    raise E()\n"
        ),
        "classify",
        "E: (its message cannot be printed)",
    ),
    (
        "P19 raises MemoryError",
        _source("def load(self, request):\n    raise MemoryError\n"),
        "classify",
        "failed in load(): MemoryError",
    ),
    (
        "P20 raises typer.Exit(0)",
        _source("def load(self, request):\n    import typer; raise typer.Exit(0)\n"),
        "classify",
        "failed in load(): Exit",
    ),
    (
        "P21 load() for generate returns an image model",
        _source(_GOOD_LOAD, tasks="tasks = ('generate',)\n    takes_weights = False\n"),
        "generate",
        "not aim's LanguageModel",
    ),
    (
        "P22 a 10 MB error message",
        _source("def load(self, request):\n    raise ValueError('x' * 10_000_000)\n"),
        "classify",
        "ValueError: xxx",
    ),
    (
        "P23 the entry point names a missing attribute",
        _source(_GOOD_LOAD).replace("class Source", "class Other"),
        "classify",
        "failed in import: AttributeError",
    ),
    (
        "P24 tasks is an endless generator object",
        _source(_GOOD_LOAD, tasks="tasks = __import__('itertools').repeat('classify')\n    takes_weights = False\n"),
        "classify",
        "failed in tasks: it is repeat",
    ),
]


@pytest.mark.parametrize(("case", "module", "task", "expected"), PLUGINS, ids=[case[0].split()[0] for case in PLUGINS])
def test_a_misbehaving_plugin_is_named_in_one_exit_2_line(tmp_path, fresh, case, module, task, expected):
    _install(tmp_path, "odd", module)
    fresh.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelError) as caught:
        load_model(task, "odd:x", device=CPU)
    text = _one_line(caught.value)
    assert text.startswith("model source 'odd' (package aimzoo-odd 0.3) failed in "), text
    assert expected in text and len(text) < 800, (case, text)
    assert "pip uninstall aimzoo-odd" in text


_LOGITS_LOAD = """
def load(self, request):
    import torch
    from aim_cli.models.image_model import ImageModel
    model = ImageModel("odd", ["a", "b"], request.device, torch.nn.Identity(), lambda images: None, task="classify")
    model.logits = lambda images: (LOGITS)
    return model
"""

# (case id, what the plugin's logits() gives for the batch, the fragment of the one-line error)
LOGITS = [
    ("P33 logits() raises", "(_ for _ in ()).throw(RuntimeError('gpu on fire'))", "failed in logits(): RuntimeError"),
    ("P34 logits() returns a list", "[[0.0, 1.0]] * len(images)", "it returned list, not a tensor"),
    ("P35 logits() of the wrong width", "torch.zeros(len(images), 3)", "it returned shape (1, 3) for 1 image(s)"),
    ("P36 logits() for the wrong batch", "torch.zeros(5, 2)", "it returned shape (5, 2) for 1 image(s)"),
    ("P37 integer logits", "torch.zeros(len(images), 2, dtype=torch.int64)", "not floating point"),
    ("P38 logits() calls sys.exit(0)", "__import__('sys').exit(0)", "it called sys.exit(0)"),
]


@pytest.mark.parametrize(("case", "logits", "expected"), LOGITS, ids=[case[0].split()[0] for case in LOGITS])
def test_a_plugin_models_logits_are_guarded_and_checked(tmp_path, fresh, case, logits, expected):
    from PIL import Image

    _install(tmp_path, "odd", _source(_LOGITS_LOAD.replace("LOGITS", logits)))
    fresh.syspath_prepend(str(tmp_path))
    model = load_model("classify", "odd:x", device=CPU)
    with pytest.raises(ModelError) as caught:
        model.logits([Image.new("RGB", (4, 4))])
    text = _one_line(caught.value)
    assert "model source 'odd' (package aimzoo-odd 0.3) failed in logits()" in text and expected in text, case


def test_two_packages_claiming_one_source_are_both_named(tmp_path, fresh):
    _install(tmp_path, "odd", _source(_GOOD_LOAD), package="aimzoo-one")
    _install(tmp_path, "odd", _source(_GOOD_LOAD), package="aimzoo-two")
    fresh.syspath_prepend(str(tmp_path))
    with pytest.raises(
        ModelError, match=r"declared by more than one installed package .aimzoo-one 0\.3 and aimzoo-two 0\.3"
    ):
        load_model("classify", "odd:x", device=CPU)


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(["import", "its constructor", "tasks", "load()"]),
    st.sampled_from(
        [
            "raise RuntimeError('r')",
            "raise SystemExit(3)",
            "raise SystemExit('bye')",
            "raise KeyboardInterrupt",
            "raise RecursionError",
            "raise GeneratorExit",
            "raise BaseException('b')",
            "import sys; sys.exit(None)",
            "raise __import__('aim_cli.errors').errors.InputError('i', 'h')",
        ]
    ),
)
def test_whatever_a_plugin_raises_wherever_it_raises_aim_names_it(step, statement):
    """The class: any BaseException from any call into a plugin is one PluginError naming the step."""
    import importlib.util
    import tempfile

    body = {
        "import": (statement, "", "('classify',)", "pass"),
        "its constructor": ("", statement, "('classify',)", "pass"),
        "tasks": ("", "pass", None, "pass"),
        "load()": ("", "pass", "('classify',)", statement),
    }[step]
    top, init, tasks, load = body
    tasks_code = f"tasks = {tasks}" if tasks else f"@property\n    def tasks(self):\n        {statement}"
    module = (
        f"{top}\nclass Source:\n    {tasks_code}\n    takes_weights = False\n"
        f"    def __init__(self):\n        {init or 'pass'}\n    def load(self, request):\n        {load}\n"
    )
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        name = f"aimzoo_prop_{abs(hash((step, statement)))}"
        _install(root, "prop", module, package=name.replace("_", "-"))
        sys.path.insert(0, folder)
        try:
            assert importlib.util.find_spec(name) is not None
            with pytest.raises(ModelError) as caught:
                load_model("classify", "prop:x", device=CPU)
        finally:
            sys.path.remove(folder)
            sys.modules.pop(name, None)
    assert f"failed in {step}" in _one_line(caught.value)


# --- the CLI: exit codes, stdout, and the user's own Ctrl-C ---------------------------------------------


def _cli_env(root: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(root), str(REPO), os.environ.get("PYTHONPATH", "")])}


def test_the_cli_exits_2_not_0_when_a_plugin_calls_sys_exit(tmp_path):
    _install(tmp_path, "odd", _source("def load(self, request):\n    import sys; sys.exit(0)\n"))
    result = run_aim("classify", "--model", "odd:x", str(SAMPLE), env=_cli_env(tmp_path))
    assert result.returncode == 2, result.stderr
    assert "model source 'odd' (package aimzoo-odd 0.3) failed in load(): it called sys.exit(0)" in result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr


def test_the_cli_exits_2_when_a_plugin_models_logits_fail(tmp_path):
    _install(tmp_path, "odd", _source(_LOGITS_LOAD.replace("LOGITS", "torch.zeros(7, 7)")))
    result = run_aim("classify", "--model", "odd:x", str(SAMPLE), env=_cli_env(tmp_path))
    assert result.returncode == 2, result.stderr
    assert "failed in logits(): it returned shape (7, 7)" in result.stderr and "internal error" not in result.stderr


def test_what_a_plugin_prints_stays_off_stdout(tmp_path):
    load = _GOOD_LOAD.replace("def load(self, request):\n", "def load(self, request):\n        print('zoo says hi')\n")
    _install(tmp_path, "odd", _source(load))
    result = run_aim("classify", "--model", "odd:x", str(SAMPLE), env=_cli_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "zoo says hi" in result.stderr and "zoo says hi" not in result.stdout


@pytest.mark.parametrize("swallows", [False, True])
def test_the_users_ctrl_c_during_a_plugin_load_is_an_interrupt_not_a_plugin_error(tmp_path, swallows):
    marker = tmp_path / "loading"
    wait = f"""
    def load(self, request):
        import pathlib, time
        pathlib.Path({str(marker)!r}).write_text("x")
        {"try:" if swallows else "if True:"}
            for _ in range(600):
                time.sleep(0.1)
        {"except BaseException:" if swallows else "if False:"}
            pass
        raise RuntimeError("not reached")
    """
    _install(tmp_path, "odd", _source(wait))
    process = subprocess.Popen(
        [sys.executable, "-m", "aim_cli", "classify", "--model", "odd:x", str(SAMPLE)],
        env=aim_env(_cli_env(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(6000):  # synchronise on the file the plugin writes
            if marker.exists() or process.poll() is not None:
                break
            time.sleep(0.05)
        assert marker.exists(), process.communicate()[1]
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted (SIGINT)" in stderr and "model source" not in stderr


# --- a transformers config.json whose sizes outgrow its weights ------------------------------------
DEMO_LM = REPO / "aim_cli" / "demo" / "lm"


@pytest.mark.parametrize(
    "key, value",
    [
        ("vocab_size", 20_000_000),  # under the 2^31 token-id bound: 2 x 20M x 128 floats (20 GB) if built
        ("intermediate_size", 50_000_000),  # every MLP layer 3 x 128 x 50M floats
    ],
)
def test_a_config_larger_than_its_weights_is_refused_before_it_is_built(tmp_path, key, value):
    """Counts in config.json never size memory: the network is counted on the meta device against the
    values the safetensors headers hold, and refused in one line before transformers allocates it."""
    folder = tmp_path / "lm"
    folder.mkdir()
    for path in DEMO_LM.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config[key] = value
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    # A process of its own: were the check missing, the allocation would take the test process down.
    result = run_aim(
        "generate", "--model", str(folder), "--prompt", "1+1=", "--max-new-tokens", "2", process=True, timeout=600
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "config.json describes" in lines[0] and "weights files hold" in lines[0], result.stderr


def test_the_demo_models_fit_their_weights():
    """The check lets real checkpoints through: each demo folder's network is no larger than its weights."""
    from transformers import AutoModelForCausalLM

    from aim_cli.models.hub import refuse_config_larger_than_weights

    refuse_config_larger_than_weights(AutoModelForCausalLM.from_pretrained, DEMO_LM, "demo", "language model")
