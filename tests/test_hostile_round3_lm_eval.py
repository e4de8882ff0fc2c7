"""Hostile round 3, lm-eval surfaces (issue 22, classes 1, 2 and 5): task folders, `aim eval`, calibrate --task lm-eval.

The table of cases is tests/data/hostile_round3/lm_eval.md. The first half needs no lm-eval: a
task folder is judged (code, includes, files it reads, outputs) before lm-eval is imported. The
second half runs lm-eval (the eval extra) and skips cleanly without it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_cli.errors import InputError
from aim_cli.tasks.task_folder import TaskCodeError, scan_task_folder
from tests.conftest import assert_user_error, run_aim

PLAIN = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
"""


def write_task(folder: Path, body: str, name: str = "t.yaml", data: bool = True) -> Path:
    """A task folder holding one task file (and a one-line data set beside it)."""
    folder.mkdir(parents=True, exist_ok=True)
    if data:
        (folder / "d.jsonl").write_text(json.dumps({"question": "1+1=", "choices": ["2", "3"], "answer": 0}) + "\n")
    (folder / name).write_text(body, encoding="utf-8")
    return folder


def plain(folder: Path, name: str = "toy", data: str | None = None) -> str:
    """A valid multiple-choice task reading `data` (default: the folder's d.jsonl)."""
    return PLAIN.format(name=name, data=data or folder / "d.jsonl")


# --- class 1: task code is opt-in ---------------------------------------------------------------

CODE_CASES = [
    # (case id, extra YAML appended to a plain task, key named in the refusal)
    ("process_docs", "process_docs: !function utils.process_docs\n", "process_docs"),
    ("doc_to_text_function", "doc_to_text_fn: !function utils.text\n", "doc_to_text_fn"),
    ("metric_function", "metric_list2:\n  - metric: !function m.f\n", "metric_list2[0].metric"),
    ("aggregation_function", "x:\n  - metric: acc\n    aggregation: !function m.agg\n", "x[0].aggregation"),
    (
        "filter_function",
        "filter_list:\n  - name: f\n    filter:\n      - function: custom\n        filter_fn: !function f.g\n",
        "filter_list[0].filter[0].filter_fn",
    ),
    ("class_tagged", "class: !function mod.Cls\n", "class"),
    ("class_plain", "class: SomeTask\n", "class"),
    ("python_name", "doc_to_decontamination_query: !!python/name:os.system\n", "doc_to_decontamination_query"),
    ("python_apply", "y: !!python/object/apply:os.system ['id']\n", "y"),
    ("python_new", "y: !!python/object/new:subprocess.Popen [['id']]\n", "y"),
    ("local_tag", "y: !include other.yaml\n", "y"),
    ("trust_remote_code", "dataset_kwargs2: 1\n", None),  # control: harmless key
    ("metric_script_path", "metric_list2:\n  - metric: ./metrics/evil\n", "metric_list2[0].metric"),
    ("metric_script_py", "metric_list2:\n  - metric: evil.py\n", "metric_list2[0].metric"),
    ("hf_evaluate", "metric_list2:\n  - metric: bleu\n    hf_evaluate: true\n", "metric_list2[0].hf_evaluate"),
    ("nested_function", "metadata:\n  deep:\n    - {a: [1, {b: !function z.z}]}\n", "metadata.deep[0].a[1].b"),
]


@pytest.mark.parametrize(("case", "extra", "key"), CODE_CASES, ids=[c[0] for c in CODE_CASES])
def test_task_code_is_refused_naming_file_key_and_flag(tmp_path, case, extra, key):
    folder = tmp_path / "tasks"
    write_task(folder, plain(folder) + extra)
    if key is None:
        assert scan_task_folder(folder).task_files == [folder / "t.yaml"]
        return
    with pytest.raises(TaskCodeError) as caught:
        scan_task_folder(folder)
    text = str(caught.value)
    assert f"`{key}`" in text and str(folder / "t.yaml") in text and "--trust-task-code" in text, text
    assert "\n" not in text
    scan_task_folder(folder, trust_code=True)  # the flag lets it through


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (
            "task: t\ndataset_path: json\ndataset_kwargs:\n  trust_remote_code: true\n",
            "dataset_kwargs.trust_remote_code",
        ),
        ("task: t\ndataset_path: ./loader.py\n", "dataset_path"),
        ("group: g\ntask:\n  - task: inner\n    process_docs: !function u.f\n", "task[0].process_docs"),
        ("!function utils.everything\n", "(document)"),
    ],
)
def test_loading_scripts_groups_and_whole_documents_count_as_code(tmp_path, body, key):
    folder = write_task(tmp_path / "tasks", body, data=False)
    with pytest.raises(TaskCodeError, match=f"`{key}`".replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        scan_task_folder(folder)


_SCALARS = st.one_of(st.integers(-5, 5), st.text("abc xyz{}", max_size=6), st.booleans(), st.none())
_KEYS = st.sampled_from(["task", "doc_to_text", "metric", "a", "b", "filter", "metadata", "x1"])


def _trees(depth: int):
    """Arbitrary small task-like YAML trees (dicts and lists of scalars)."""
    return st.recursive(
        _SCALARS,
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=3)),
        max_leaves=depth,
    )


def _plant(tree, path: list[int]):
    """Put the marker '@@FUNCTION@@' at a position chosen by `path` (the root becomes a dict if it is a scalar)."""
    if not isinstance(tree, (dict, list)) or not tree:
        return {"here": "@@FUNCTION@@"}
    node = tree
    for step in path:
        children = list(node.values()) if isinstance(node, dict) else node
        containers = [c for c in children if isinstance(c, (dict, list)) and c]
        if not containers:
            break
        node = containers[step % len(containers)]
    if isinstance(node, dict):
        node["planted"] = "@@FUNCTION@@"
    else:
        node.append("@@FUNCTION@@")
    return tree


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=_trees(12), path=st.lists(st.integers(0, 5), max_size=6))
def test_a_function_tag_at_any_depth_is_refused_and_trees_without_one_pass(tmp_path_factory, tree, path):
    """Property: any YAML tree with a `!function` anywhere is refused; the same tree without it is not."""
    folder = tmp_path_factory.mktemp("tree")
    clean = yaml.safe_dump({"task": "t", "body": tree})
    write_task(folder, clean, data=False)
    scan_task_folder(folder)  # no code: accepted
    planted = yaml.safe_dump({"task": "t", "body": _plant(tree, path)})
    assert "@@FUNCTION@@" in planted
    write_task(
        folder,
        planted.replace("'@@FUNCTION@@'", "!function mod.fn").replace("@@FUNCTION@@", "!function mod.fn"),
        data=False,
    )
    with pytest.raises(TaskCodeError, match="--trust-task-code"):
        scan_task_folder(folder)


# --- includes -------------------------------------------------------------------------------------


def test_include_of_a_file_outside_the_folder_needs_the_flag(tmp_path):
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text("output_type: multiple_choice\n")
    folder = tmp_path / "tasks"
    for name in ("../elsewhere.yaml", str(outside)):
        write_task(folder, f"include: {name}\n" + plain(folder))
        with pytest.raises(TaskCodeError, match=r"`include: .*elsewhere.yaml` reads a task file outside"):
            scan_task_folder(folder)
        assert len(scan_task_folder(folder, trust_code=True).task_files) == 2  # the flag lets it read it


def test_an_include_inside_the_folder_is_scanned_too(tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "base.inc").write_text("process_docs: !function u.f\n")
    write_task(folder, "include: base.inc\n" + plain(folder))
    with pytest.raises(TaskCodeError, match=r"base.inc: `process_docs`"):
        scan_task_folder(folder)


def test_an_include_cycle_is_one_line(tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "a.yaml").write_text("include: b.yaml\ntask: a\n")
    (folder / "b.yaml").write_text("include: a.yaml\ntask: b\n")
    with pytest.raises(InputError, match="includes itself"):
        scan_task_folder(folder)


def test_include_is_resolved_from_the_working_folder_first_as_lm_eval_does(tmp_path, monkeypatch):
    """lm-eval opens `include: x.yaml` from the working folder when such a file exists there: so does the scan."""
    folder = tmp_path / "tasks"
    write_task(folder, "include: shared.yaml\n" + plain(folder))
    (folder / "shared.yaml").write_text("output_type: multiple_choice\n")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "shared.yaml").write_text("process_docs: !function evil.run\n")
    monkeypatch.chdir(cwd)
    with pytest.raises(TaskCodeError, match="reads a task file outside"):
        scan_task_folder(folder)


# --- class 2: what the run reads ----------------------------------------------------------------


def test_a_symlinked_task_file_pointing_outside_is_refused(tmp_path):
    secret = tmp_path / "secret.yaml"
    secret.write_text("task: x\n")
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "link.yaml").symlink_to(secret)
    with pytest.raises(InputError, match="lies outside"):
        scan_task_folder(folder)
    assert scan_task_folder(folder, allow_outside=True).task_files == [folder / "link.yaml"]


def test_a_symlinked_folder_is_followed_and_a_loop_ends(tmp_path):
    """lm-eval's glob may follow a symlinked folder: the scan does too (once), and judges what it finds."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.yaml").write_text("task: x\nprocess_docs: !function u.f\n")
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "linked").symlink_to(outside, target_is_directory=True)
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    with pytest.raises(InputError, match="lies outside"):
        scan_task_folder(folder)
    with pytest.raises(TaskCodeError, match="process_docs"):
        scan_task_folder(folder, allow_outside=True)


@pytest.mark.parametrize(
    "data_files",
    [
        "{outside}",
        "../outside.jsonl",
        "['{inside}', '{outside}']",
        "{{train: '{inside}', test: ['{outside}']}}",
        "'{glob}'",
        "{link}",
    ],
)
def test_a_data_file_outside_the_folder_is_refused_unless_allowed(tmp_path, monkeypatch, data_files):
    folder = tmp_path / "tasks"
    folder.mkdir()
    outside = tmp_path / "outside.jsonl"
    outside.write_text("{}\n")
    (folder / "in.jsonl").write_text("{}\n")
    (folder / "link.jsonl").symlink_to(outside)
    monkeypatch.chdir(folder)  # datasets resolves relative names from the working folder
    spec = data_files.format(
        outside=outside, inside=folder / "in.jsonl", glob=tmp_path / "*.jsonl", link=folder / "link.jsonl"
    )
    (folder / "t.yaml").write_text(f"task: t\ndataset_path: json\ndataset_kwargs:\n  data_files: {spec}\n")
    with pytest.raises(InputError, match=r"data file of task file .* lies outside"):
        scan_task_folder(folder)
    reads = scan_task_folder(folder, allow_outside=True)
    assert reads.data_files


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(["..", ".", "sub", "tasks", "x.jsonl"]), min_size=1, max_size=6))
def test_any_relative_data_file_is_refused_exactly_when_it_leaves_the_folder(tmp_path_factory, parts):
    """Property: a data file named by any mix of `..`, `.` and names is refused iff it resolves outside the folder."""
    base = tmp_path_factory.mktemp("rel")
    folder = base / "tasks"
    (folder / "sub").mkdir(parents=True)
    name = "/".join(parts)
    (folder / "t.yaml").write_text(f"task: t\ndataset_path: json\ndataset_kwargs:\n  data_files: {json.dumps(name)}\n")
    previous = os.getcwd()
    os.chdir(folder)  # datasets resolves relative names from the working folder
    try:
        leaves = not Path(os.path.normpath(folder / name)).is_relative_to(folder)
        if leaves:
            with pytest.raises(InputError, match="lies outside"):
                scan_task_folder(folder)
        else:
            scan_task_folder(folder)
    finally:
        os.chdir(previous)


@pytest.mark.parametrize("key", ["dataset_path", "dataset_kwargs:\n  data_dir"])
def test_a_local_dataset_folder_outside_is_refused(tmp_path, key):
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.jsonl").write_text("{}\n")
    folder = tmp_path / "tasks"
    folder.mkdir()
    dataset_path = "" if key == "dataset_path" else "dataset_path: json\n"
    (folder / "t.yaml").write_text(f"task: t\n{dataset_path}{key}: {data}\n")
    with pytest.raises(InputError, match="lies outside"):
        scan_task_folder(folder)


def test_builder_names_and_urls_are_not_local_files(tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "t.yaml").write_text(
        "task: t\ndataset_path: json\ndataset_kwargs:\n  data_files: hf://datasets/x/y.jsonl\n"
    )
    assert scan_task_folder(folder).data_files == []


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("[" * 5000 + "]" * 5000, "nested deeper"),
        ("task: [unclosed\n", "not valid YAML"),
        ("include: 5\ntask: t\n", "not a file name"),
        (b"\xff\xfe\x00bad", "not UTF-8"),
    ],
    ids=["deep", "broken", "include_number", "not_utf8"],
)
def test_broken_task_files_are_one_line(tmp_path, content, fragment):
    folder = tmp_path / "tasks"
    folder.mkdir()
    path = folder / "t.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputError, match=fragment) as caught:
        scan_task_folder(folder)
    assert "\n" not in str(caught.value)


def test_a_billion_laughs_of_aliases_is_refused_quickly(tmp_path):
    """Nested aliases expand to 10 * 5^29 values (lm-eval copies and prints configs): refused in linear time."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 30)]
    folder = write_task(tmp_path / "tasks", "task: t\n" + "\n".join(lines) + "\n", data=False)
    start = time.perf_counter()
    with pytest.raises(InputError, match="aliases"):
        scan_task_folder(folder)
    assert time.perf_counter() - start < 5
    (folder / "t.yaml").write_text("task: t\nbase: &b {x: 1}\nother: *b\n")  # a few aliases are fine
    scan_task_folder(folder)


def test_include_path_must_be_a_folder(tmp_path):
    (tmp_path / "t.yaml").write_text("task: t\n")
    for folder in (tmp_path / "t.yaml", tmp_path / "missing"):
        with pytest.raises(InputError, match="no such folder"):
            scan_task_folder(folder)


def test_a_fifo_named_like_a_task_file_is_refused_without_blocking(tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    os.mkfifo(folder / "t.yaml")
    with pytest.raises(InputError, match="not a regular file"):
        scan_task_folder(folder)


def test_a_task_file_over_the_config_bound_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("AIM_MAX_CONFIG_BYTES", "100")
    folder = write_task(tmp_path / "tasks", "task: t\n" + "# padding\n" * 50, data=False)
    with pytest.raises(InputError, match="100-byte limit"):
        scan_task_folder(folder)


# --- the CLI: refusals before anything runs (no lm-eval needed) -----------------------------------


def _folder_with_code(tmp_path: Path) -> Path:
    folder = tmp_path / "tasks"
    write_task(folder, plain(folder) + "process_docs: !function utils.run\n")
    (folder / "utils.py").write_text(f"open({str(tmp_path / 'PWNED')!r}, 'w').close()\ndef run(d):\n    return d\n")
    return folder


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "--tasks", "toy"],
        ["calibrate", "--task", "lm-eval", "--tasks", "toy", "--target-acc", "0.5", "--json", "{tmp}/r.json"],
    ],
)
def test_the_cli_refuses_task_code_before_anything_runs(tmp_path, command):
    folder = _folder_with_code(tmp_path)
    args = [a.format(tmp=tmp_path) for a in command]
    result = run_aim(*args, "--include-path", str(folder), "--device", "cpu")
    assert_user_error(result, 2, "process_docs", "--trust-task-code", str(folder / "t.yaml"))
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    ("outputs", "fragment"),
    [
        (["-o", "{folder}/out.json"], "would write inside --include-path"),
        (["--plot", "{folder}/curve.png"], "would write inside --include-path"),
        (["-o", "{data}"], "would overwrite data file"),
    ],
)
def test_aim_eval_never_writes_over_what_its_tasks_read(tmp_path, outputs, fragment):
    folder = tmp_path / "tasks"
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": 0}) + "\n")
    write_task(folder, plain(folder, data=str(data)), data=False)
    args = [a.format(folder=folder, data=data) for a in outputs]
    result = run_aim("eval", "--tasks", "toy", "--include-path", str(folder), "--allow-outside-paths", *args)
    assert_user_error(result, 2, fragment)
    assert data.read_text().startswith("{")


def test_aim_eval_refuses_a_data_file_outside_the_task_folder(tmp_path):
    folder = tmp_path / "tasks"
    data = tmp_path / "data.json"
    data.write_text("{}\n")
    write_task(folder, plain(folder, data=str(data)), data=False)
    result = run_aim("eval", "--tasks", "toy", "--include-path", str(folder))
    assert_user_error(result, 2, "lies outside", "--allow-outside-paths")


def test_calibrate_lm_eval_never_writes_into_the_task_folder(tmp_path):
    folder = tmp_path / "tasks"
    write_task(folder, plain(folder))
    result = run_aim(
        "calibrate", "--task", "lm-eval", "--tasks", "toy", "--include-path", str(folder),
        "--target-acc", "0.5", "--write-profile", str(folder / "tier.yaml"),
    )  # fmt: skip
    assert_user_error(result, 2, "would write inside --include-path")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["eval", "--tasks", "toy", "--limit", "99999999999999999999"], "--limit"),
        (["eval", "--tasks", "toy", "--num-fewshot", "100000"], "--num-fewshot"),
        (["eval", "--tasks", "toy", "--num-fewshot", "-1"], "--num-fewshot"),
        (["eval", "--tasks", "toy", "--limit", "0"], "--limit"),
        (
            [
                "calibrate",
                "--task",
                "lm-eval",
                "--tasks",
                "toy",
                "--target-acc",
                "0.5",
                "--limit",
                "99999999999999999999",
            ],
            "--limit",
        ),
        (["calibrate", "--task", "generate", "--target-acc", "0.5", "--trust-task-code"], "--include-path"),
        (["eval", "--tasks", "toy", "--trust-task-code"], "--include-path"),
        (["eval", "--tasks", "toy", "--allow-outside-paths"], "--include-path"),
    ],
)
def test_counts_are_bounded_before_anything_is_allocated(args, fragment):
    result = run_aim(*args, "--device", "cpu")
    assert_user_error(result, 2, fragment)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 or lines[-1].startswith("Error:"), result.stderr  # one line, or click's usage error


def test_the_flag_is_in_help():
    for command in ("eval", "calibrate"):
        result = run_aim(command, "--help")
        assert "--trust-task-code" in result.stdout, result.stdout


# --- with lm-eval: templates sandboxed, failures named (skips without the eval extra) ----------------

HOSTILE_TEXTS = {
    "ok": "{{question}}",
    "escape_cycler": "{{ cycler.__init__.__globals__.os.system('touch PWNED') }}{{question}}",
    "escape_mro": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "escape_joiner": "{{ joiner.__init__.__globals__ }}",
    "mutate": "{% set x = choices.append('z') %}{{question}}",
    "huge_repeat": "{{ question * 1000000000 }}",
    "huge_power": "{{ 10 ** 100000000 }}",
    "busy_loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{question}}",
}


def _task(name: str, text: str, data: str, extra: str = "") -> str:
    return (
        PLAIN.format(name=name, data=data).replace('doc_to_text: "{{question}}"', f"doc_to_text: {json.dumps(text)}")
        + extra
    )


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory) -> Path:
    """One folder with a task per hostile case (lm-eval indexes it once for the module)."""
    folder = tmp_path_factory.mktemp("hostile_tasks")
    rows = [
        {"question": "1+1=", "choices": ["2", "3"], "answer": 0},
        {"question": "2+2=", "choices": ["4", "5"], "answer": 0},
    ]
    (folder / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "broken.jsonl").write_text('{"question": "1+1=", "choices": ["2"\n')
    (folder / "index.jsonl").write_text(json.dumps({"question": "1+1=", "choices": ["2", "3"], "answer": 7}) + "\n")
    (folder / "notdict.jsonl").write_text("[1, 2]\n3\n")
    for name, text in HOSTILE_TEXTS.items():
        (folder / f"{name}.yaml").write_text(_task(name, text, str(folder / "d.jsonl")))
    plain_text = "{{question}}"
    for name, data, extra in [
        ("broken_jsonl", "broken.jsonl", ""),
        ("answer_out_of_range", "index.jsonl", ""),
        ("not_objects", "notdict.jsonl", ""),
        ("missing_data", "nope.jsonl", ""),
        ("unknown_key", "d.jsonl", "bogus_key: 3\n"),
        ("unknown_metric", "d.jsonl", "metric_list:\n  - metric: no_such_metric_xyz\n"),
        ("wrong_output_type", "d.jsonl", "output_type: nonsense\n"),
        ("imports", "d.jsonl", "process_docs: !function utils.mark\n"),
        ("exits", "d.jsonl", "process_docs: !function utils.leave\n"),
        ("interrupts", "d.jsonl", "process_docs: !function utils.stop\n"),
    ]:
        body = _task(name, plain_text, str(folder / data))
        if extra.startswith(("metric_list", "output_type")):  # replace the key instead of repeating it
            key = extra.split(":")[0]
            body = "\n".join(
                line for line in body.splitlines() if not line.startswith(key) and "- metric: acc" not in line
            )
            body += "\n" + extra
        else:
            body += extra
        (folder / f"{name}.yaml").write_text(body)
    (folder / "utils.py").write_text(
        "import sys\nfrom pathlib import Path\n"
        f"def mark(d):\n    Path({str(folder / 'IMPORTED')!r}).touch()\n    return d\n"
        "def leave(d):\n    sys.exit(0)\n"
        "def stop(d):\n    raise KeyboardInterrupt\n"
    )
    return folder


@pytest.fixture(scope="module")
def hostile_manager(hostile_dir):
    """aim's TaskManager over the hostile folder, untrusted."""
    pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate")
    from aim_cli.tasks.evaluate import quiet_lm_eval, task_manager

    quiet_lm_eval()
    return task_manager(hostile_dir)


@pytest.fixture(scope="module")
def demo_lm():
    """aim's lm-eval model on the demo LM."""
    pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate")
    from aim_cli.tasks.evaluate import load_eval_model

    return load_eval_model(None, "cpu", 8)


def _run(lm, manager, name: str, **kwargs):
    from aim_cli.profile import Profile
    from aim_cli.tasks.evaluate import run_eval

    return run_eval(lm, [name], [0.0], Profile(sigma=0.0, seed=0), manager, **{"limit": 2, **kwargs})


LIBRARY_CASES = [
    # (task, fragments of the one-line error)
    ("escape_cycler", ["stopped by the sandbox", "__init__"]),
    ("escape_mro", ["stopped by the sandbox"]),
    ("escape_joiner", ["stopped by the sandbox"]),
    ("mutate", ["stopped by the sandbox"]),
    ("huge_repeat", ["1,000,000,000 times", "AIM_MAX_PROMPT_CHARS"]),
    ("huge_power", ["too large"]),
    ("broken_jsonl", ["datasets failed", "DatasetGenerationError"]),
    ("answer_out_of_range", ["lm-eval failed", "IndexError"]),
    ("not_objects", ["datasets failed"]),
    ("missing_data", ["datasets failed", "nope.jsonl"]),
    ("unknown_key", ["bogus_key"]),
    ("wrong_output_type", ["lm-eval failed"]),
    ("imports", ["!function", "--trust-task-code"]),
]


@pytest.mark.parametrize(("name", "fragments"), LIBRARY_CASES, ids=[c[0] for c in LIBRARY_CASES])
def test_lm_eval_and_datasets_failures_are_one_line_naming_the_task(
    hostile_dir, hostile_manager, demo_lm, name, fragments
):
    import lm_eval.utils

    from aim_cli.tasks.lm_eval_guard import TaskError

    original = lm_eval.utils.apply_template
    with pytest.raises(TaskError) as caught:
        _run(demo_lm, hostile_manager, name)
    text = str(caught.value)
    assert caught.value.exit_code == 2 and "\n" not in text and name in text, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    assert lm_eval.utils.apply_template is original  # the sandbox is put back
    assert not (hostile_dir / "IMPORTED").exists() and not Path("PWNED").exists()


def test_more_fewshot_examples_than_documents_names_lm_eval(hostile_manager, demo_lm):
    """random.sample raises for lm-eval: the message names lm-eval (the caller), not Python's random.py."""
    from aim_cli.tasks.lm_eval_guard import TaskError

    with pytest.raises(TaskError, match="lm-eval failed: ValueError: Sample larger than population"):
        _run(demo_lm, hostile_manager, "ok", num_fewshot=50)


def test_a_template_that_loops_for_ever_is_stopped_by_the_step_bound(hostile_manager, demo_lm, monkeypatch):
    from aim_cli.tasks.lm_eval_guard import TaskError

    monkeypatch.setenv("AIM_MAX_TEMPLATE_STEPS", "200000")
    start = time.perf_counter()
    with pytest.raises(TaskError, match="AIM_MAX_TEMPLATE_STEPS"):
        _run(demo_lm, hostile_manager, "busy_loops")
    assert time.perf_counter() - start < 60


def test_a_plain_task_still_runs_and_matches_lm_evals_own_rendering(hostile_manager, demo_lm):
    report = _run(demo_lm, hostile_manager, "ok")
    assert [(r.task, r.metric, r.value) for r in report.rows if r.metric == "acc"] == [("ok", "acc", 1.0)]


def test_trusted_code_runs_and_its_exits_and_interrupts_are_named(hostile_dir, hostile_manager, demo_lm, monkeypatch):
    """--trust-task-code: the task's Python runs; its sys.exit or stray KeyboardInterrupt is one line, exit 2."""
    from aim_cli.tasks.lm_eval_guard import TaskError

    monkeypatch.setattr(hostile_manager, "aim_trust_code", True)
    _run(demo_lm, hostile_manager, "imports")
    assert (hostile_dir / "IMPORTED").exists()
    (hostile_dir / "IMPORTED").unlink()
    with pytest.raises(TaskError, match="tried to exit"):
        _run(demo_lm, hostile_manager, "exits")
    with pytest.raises(TaskError, match="KeyboardInterrupt"):
        _run(demo_lm, hostile_manager, "interrupts")


def test_a_bug_in_aims_own_code_is_still_a_bug(hostile_manager, demo_lm, monkeypatch):
    """The guard names third parties only: an exception raised in aim_cli passes through (exit 3 at the CLI)."""
    from aim_cli.integrations.lm_eval import AimLM, prefix_keys

    def broken(self, *args, **kwargs):
        return prefix_keys(None, 0)  # raises AttributeError inside aim_cli, as a bug there would

    monkeypatch.setattr(AimLM, "_model_call", broken)
    with pytest.raises(AttributeError):
        _run(demo_lm, hostile_manager, "ok")


def test_calibration_names_lm_eval_failures_too(hostile_manager, demo_lm):
    from aim_cli.calibration.lm_eval import calibrate_on_tasks
    from aim_cli.calibration.runner import CalibrationRequest
    from aim_cli.tasks.lm_eval_guard import TaskError

    request = CalibrationRequest(metric="accuracy", value=0.5, draws=2, seed=0, batch_size=8)
    for name in ("answer_out_of_range", "escape_cycler", "broken_jsonl"):
        with pytest.raises(TaskError, match=name):
            calibrate_on_tasks(demo_lm, [name], hostile_manager, request, limit=2)


@pytest.mark.slow
def test_the_cli_sandboxes_a_template_escape_end_to_end(tmp_path):
    pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate")
    folder = tmp_path / "tasks"
    write_task(
        folder,
        _task("esc", HOSTILE_TEXTS["escape_cycler"].replace("PWNED", str(tmp_path / "PWNED")), str(folder / "d.jsonl")),
    )
    result = run_aim(
        "eval", "--tasks", "esc", "--include-path", str(folder), "--device", "cpu", "--limit", "1", "--quiet"
    )
    assert_user_error(result, 2, "stopped by the sandbox")
    assert not (tmp_path / "PWNED").exists()
