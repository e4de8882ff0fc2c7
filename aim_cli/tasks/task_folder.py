"""What an lm-eval task folder (`--include-path`) may do, decided before lm-eval reads a byte of it.

A task folder is code unless proven otherwise: lm-eval's YAML loader imports and runs Python
for `!function` tags, `class:` keys and `include:`s of other task files, and `datasets` runs a
loading script for `trust_remote_code` or a `.py` dataset path. This module reads every YAML file
lm-eval would index under the folder with a safe loader (a `!function` becomes a tagged value,
never an import), follows `include:` exactly as lm-eval resolves it, and refuses code unless the
user passed --trust-task-code. It also lists every data file the tasks name, resolved as
`datasets` resolves it, so that the command can hold them to the rules of files on the command
line (inside the folder, never an output) before the run starts.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aim_cli.errors import InputError
from aim_cli.io import check_inside, read_text_file
from aim_cli.limits import CONFIG_BYTES

TRUST_TASK_CODE_FLAG = "--trust-task-code"
# lm-eval indexes every *.yaml under the folder; a folder of more is not a task folder.
MAX_TASK_FILES = 10_000
MAX_INCLUDE_DEPTH = 32
# Nesting a task config needs is a handful of levels; PyYAML composes recursively.
MAX_YAML_DEPTH = 64
# Values once YAML aliases are expanded: a few hundred bytes of nested aliases are billions of them.
MAX_YAML_NODES = 1_000_000
# `datasets` builders that read data_files instead of treating dataset_path as a place.
PACKAGED_BUILDERS = frozenset(
    {"json", "csv", "parquet", "text", "arrow", "pandas", "imagefolder", "audiofolder", "webdataset", "xml", "sql"}
)
# Keys that hand lm-eval a Python object to call even without a !function tag.
CODE_KEYS = ("class",)


class TaskCodeError(InputError):
    """A task file would run code the user did not opt in to (exit 2)."""


@dataclass(frozen=True)
class Tagged:
    """A YAML value with a code tag (`!function mod.fn`, `!!python/name:...`): what lm-eval would import."""

    tag: str
    value: str

    def __str__(self) -> str:
        return f"{self.tag} {self.value}".strip()


@dataclass
class TaskFolderReads:
    """Every file a run over the folder reads: the task YAML (with their includes) and the data files they name."""

    folder: Path
    task_files: list[Path] = field(default_factory=list)
    data_files: list[tuple[str, Path]] = field(default_factory=list)  # (how it is named, path)

    def inputs(self) -> list[tuple[str, Path]]:
        """(label, path) pairs for refuse_clobbering: the folder (which owns everything under it) and each data file."""
        return [("--include-path", self.folder), *self.data_files]


class _Loader(yaml.SafeLoader):
    """SafeLoader where any tag outside YAML's own becomes a Tagged value instead of an import or an error."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Tagged:
    """A code tag, kept as text."""
    value = loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else "..."
    return Tagged(node.tag.replace("tag:yaml.org,2002:", "!!"), str(value))


_Loader.add_multi_constructor("!", _tagged)
_Loader.add_multi_constructor("tag:yaml.org,2002:python/", _tagged)


def load_task_yaml(path: Path, within: Path | None) -> Any:
    """One task file, parsed without importing anything (a size-bounded, regular, non-blocking read)."""
    text = read_text_file(path, CONFIG_BYTES, InputError, "task file", within)
    try:
        _check_depth(text, path)
        config = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"task file {path} is not valid YAML{where}: {problem}", "fix the file") from None
    if expanded_size(config, MAX_YAML_NODES) > MAX_YAML_NODES:  # aliases: lm-eval copies and prints configs
        raise InputError(
            f"task file {path} expands to over {MAX_YAML_NODES:,} values through its aliases (*name)",
            "write the values out instead of repeating aliases",
        )
    return config


def _check_depth(text: str, path: Path) -> None:
    """Refuse nesting deep enough to overflow PyYAML's recursive composer (events only, nothing built)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark is not None else 0
                raise InputError(
                    f"task file {path}: lists and mappings nested deeper than {MAX_YAML_DEPTH} levels (line {line})",
                    "a task config needs a few levels",
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def expanded_size(value: Any, limit: int) -> int:
    """How many nodes `value` has with its aliases expanded (as a copy or dump of it would), capped past `limit`."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        node, children_done = stack.pop()
        if not isinstance(node, (dict, list)) or id(node) in sizes:
            continue
        children = list(node.values()) if isinstance(node, dict) else node
        if not children_done:
            stack.append((node, True))
            stack.extend((child, False) for child in children if isinstance(child, (dict, list)))
            continue
        total = 1 + sum(sizes.get(id(c), 1) if isinstance(c, (dict, list)) else 1 for c in children)
        sizes[id(node)] = min(total, limit + 1)
    return sizes.get(id(value), 1)


def walk_values(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every node of a parsed YAML tree, each shared node (an alias) once."""
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [(key, value)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, (dict, list)):
            if id(node) in seen:
                continue
            seen.add(id(node))
        yield where, node
        if isinstance(node, dict):
            items = [(f"{where}.{k}" if where else str(k), v) for k, v in node.items()]
            stack.extend(reversed(items))
        elif isinstance(node, list):
            stack.extend((f"{where}[{i}]", v) for i, v in reversed(list(enumerate(node))))


def find_code(config: Any) -> tuple[str, str] | None:
    """(key, what) of the first thing in a parsed task config that would import or run Python, else None."""
    for where, node in walk_values(config):
        if isinstance(node, Tagged):
            return where or "(document)", f"is `{node}`, which imports and runs Python"
        if isinstance(node, dict):
            for key in CODE_KEYS:
                if key in node:
                    return _join(where, key), "names a Python class for lm-eval to instantiate"
            kwargs = node.get("dataset_kwargs")
            if isinstance(kwargs, dict) and kwargs.get("trust_remote_code"):
                return _join(where, "dataset_kwargs.trust_remote_code"), "lets datasets run a loading script"
            path = node.get("dataset_path")
            if isinstance(path, str) and path.endswith(".py"):
                return _join(where, "dataset_path"), "is a dataset loading script, which datasets runs"
            if node.get("hf_evaluate") is True:
                return _join(where, "hf_evaluate"), "makes the evaluate library load (and run) a metric script"
            metric = node.get("metric")
            if isinstance(metric, str) and ("/" in metric or "\\" in metric or metric.endswith(".py")):
                return _join(where, "metric"), "names a metric script, which the evaluate library would run"
    return None


def _join(where: str, key: str) -> str:
    """A dotted key below `where`."""
    return f"{where}.{key}" if where else key


def include_targets(config: Any, yaml_dir: Path) -> list[tuple[str, Path]]:
    """The files a task config's `include:` may name, resolved every way lm-eval resolves it.

    lm-eval 0.4.10+ reads the name beside the including file (or as an absolute path); earlier
    versions try the working folder first. Both candidates are judged, so neither can escape.
    """
    if not isinstance(config, dict) or "include" not in config:
        return []
    named = config["include"]
    names = [named] if isinstance(named, str) else named
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputError(f"include {named!r} is not a file name or a list of them", "name task YAML files")
    targets: list[tuple[str, Path]] = []
    for name in names:
        beside = Path(name) if Path(name).is_absolute() else yaml_dir / name
        targets.append((name, beside))
        if not Path(name).is_absolute() and os.path.isfile(name) and os.path.realpath(name) != os.path.realpath(beside):
            targets.append((name, Path(name)))  # what an older lm-eval would read instead
    return targets


def _inside(path: Path, root: Path) -> bool:
    """Whether `path` lies inside `root` once symlinks are resolved."""
    return Path(os.path.realpath(path)).is_relative_to(root)


def task_files_under(folder: Path) -> list[Path]:
    """The *.yaml files lm-eval's TaskManager may index under a folder (symlinked folders followed, once each)."""
    found: list[Path] = []
    seen: set[str] = set()
    for top, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:  # a symlink loop, or a folder reached twice
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", ".ipynb_checkpoints"))
        for name in sorted(files):
            if name.endswith(".yaml"):
                found.append(Path(top) / name)
                if len(found) > MAX_TASK_FILES:
                    raise InputError(
                        f"--include-path {folder} holds over {MAX_TASK_FILES:,} task files",
                        "point it at the folder of the tasks you run",
                    )
    return sorted(found)


def scan_task_folder(folder: Path, trust_code: bool = False, allow_outside: bool = False) -> TaskFolderReads:
    """Read and judge every task file under `folder` before lm-eval does; what the run will read.

    Refuses, with one line naming the file, the key and the flag: code (a `!function`, `class:`,
    a loading script) and `include:` of a file outside the folder, unless `trust_code`; a task
    file or data file outside the folder (symlinks resolved), unless `allow_outside`.
    """
    if not folder.is_dir():
        raise InputError(f"--include-path {folder}: no such folder", "point it at a folder of lm-eval task YAML")
    root = Path(os.path.realpath(folder))
    reads = TaskFolderReads(folder)
    done: set[str] = set()
    for path in task_files_under(folder):
        _scan_file(path, root, reads, done, [], trust_code, allow_outside)
    return reads


def _scan_file(
    path: Path,
    root: Path,
    reads: TaskFolderReads,
    done: set[str],
    chain: list[str],
    trust_code: bool,
    allow_outside: bool,
) -> None:
    """One task file and, depth first, the files it includes."""
    real = os.path.realpath(path)
    if real in chain:
        raise InputError(f"task file {path} includes itself (through {len(chain)} includes)", "break the include cycle")
    if real in done:
        return
    if len(chain) > MAX_INCLUDE_DEPTH:
        raise InputError(f"task file {path}: includes nested over {MAX_INCLUDE_DEPTH} deep", "flatten the includes")
    within = None if (allow_outside or trust_code or chain) else root
    config = load_task_yaml(path, within)  # a symlinked task file must stay inside the folder
    done.add(real)
    reads.task_files.append(path)
    if not trust_code:
        found = find_code(config)
        if found is not None:
            key, what = found
            raise TaskCodeError(
                f"task file {path}: `{key}` {what}",
                f"lm-eval reads every task file in the folder; pass {TRUST_TASK_CODE_FLAG} if you trust them",
            )
    for name, target in include_targets(config, path.parent):
        if not trust_code and not _inside(target, root):
            raise TaskCodeError(
                f"task file {path}: `include: {name}` reads a task file outside {reads.folder}",
                f"copy it into the folder, or pass {TRUST_TASK_CODE_FLAG} if you trust it",
            )
        _scan_file(target, root, reads, done, [*chain, real], trust_code, allow_outside)
    for label, data in data_files_of(config, path):
        if not allow_outside:
            check_inside(os.path.realpath(data), data, root, InputError, label)
        reads.data_files.append((label, data))


def data_files_of(config: Any, path: Path) -> list[tuple[str, Path]]:
    """The local files a task config makes `datasets` read, resolved as datasets does (from the working folder).

    `dataset_kwargs.data_files` (a name, a glob, a list, or a dict of splits to those), relative to
    `dataset_kwargs.data_dir` when given; a `dataset_path` that is a local file or folder and not
    one of datasets' packaged builders. Remote URLs are not files here (aim runs offline).
    """
    found: list[tuple[str, Path]] = []
    for where, node in walk_values(config):
        if not isinstance(node, dict):
            continue
        kwargs = node.get("dataset_kwargs")
        kwargs = kwargs if isinstance(kwargs, dict) else {}
        data_dir = kwargs.get("data_dir")
        base = Path(data_dir) if isinstance(data_dir, str) else Path()
        label = f"data file of task file {path} (`{_join(where, 'dataset_kwargs.data_files')}`)"
        for name in _names(kwargs.get("data_files")):
            if "://" not in name:  # a URL is not a local file (and aim runs offline)
                found.extend((label, match) for match in _expand(base / name))
        if isinstance(data_dir, str) and "://" not in data_dir and Path(data_dir).exists():
            found.extend(_folder_files(Path(data_dir), f"data file of task file {path} (`dataset_kwargs.data_dir`)"))
        dataset = node.get("dataset_path")
        if isinstance(dataset, str) and dataset not in PACKAGED_BUILDERS and "://" not in dataset:
            local = Path(dataset)
            if local.is_file():
                found.append((f"dataset_path of task file {path}", local))
            elif local.is_dir():
                found.extend(_folder_files(local, f"data file of task file {path} (`dataset_path`)"))
    return found


def _names(value: Any) -> list[str]:
    """The file names of a data_files value: a string, a list of strings, or a dict of splits to either."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for item in value for v in _names(item)]
    if isinstance(value, dict):
        return [v for item in value.values() for v in _names(item)]
    return []


def _expand(pattern: Path) -> list[Path]:
    """A data_files name or glob as the local files it matches."""
    text = str(pattern)
    if glob.has_magic(text):
        return [Path(p) for p in sorted(glob.glob(text, recursive=True)) if os.path.isfile(p)][:MAX_TASK_FILES]
    return [pattern]


def _folder_files(folder: Path, label: str) -> list[tuple[str, Path]]:
    """Every file under a local dataset folder (datasets may read any of them), symlinked folders not followed."""
    found: list[tuple[str, Path]] = [(label, folder)]
    for top, _dirs, files in os.walk(folder):
        found.extend((label, Path(top) / name) for name in files)
        if len(found) > MAX_TASK_FILES:
            break
    return found


__all__ = [
    "TRUST_TASK_CODE_FLAG",
    "Tagged",
    "TaskCodeError",
    "TaskFolderReads",
    "find_code",
    "load_task_yaml",
    "scan_task_folder",
]
