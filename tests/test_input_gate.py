"""One gate for every file aim reads: regular files only, bounded, never blocking (issue 15).

The bulk of the matrix (every reader x every bad kind of file) runs in-process against the
readers themselves, under an alarm so that a read that blocks fails instead of hanging; the
CLI is run once per reader to prove the error reaches the user as one line with exit code 2
(or as a per-input failure, exit 1, inside a batch).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aim_cli import demo
from aim_cli.calibration.datasets import read_classification_data, read_segmentation_data, read_text_data
from aim_cli.errors import AimError, FailedInput, InputError
from aim_cli.images import load_image
from aim_cli.io import read_records, read_regular_file
from aim_cli.limits import IMAGE_BYTES, TEXT_BYTES
from aim_cli.masks import read_mask
from aim_cli.models.weights import read_labels_file
from aim_cli.profile import Profile
from aim_cli.prompts import gather_prompts, read_prompt_file
from tests.conftest import run_aim

CLASSIFY_SAMPLES = demo.samples_dir("classify")
SEGMENT_SAMPLES = demo.samples_dir("segment")
CIRCLE = CLASSIFY_SAMPLES / "circle_0.png"
SQUARE = CLASSIFY_SAMPLES / "square_0.png"
SCENE = SEGMENT_SAMPLES / "scene_0.png"
SCENE_MASK = demo.samples_dir("segment_masks") / "scene_0.png"
# A CLI run that blocks on a pipe is killed after this long and fails the test (generous: a loaded
# 2-core machine may take a minute to import torch; a run that works ends long before).
CLI_TIMEOUT = 300
BOUND = 100  # the small size bound the oversize cases set through the environment


@pytest.fixture
def no_hang():
    """Fail a read that blocks (a FIFO opened without O_NONBLOCK) instead of hanging the suite."""

    def _blocked(_signum: int, _frame: Any) -> None:
        raise TimeoutError("the read blocked")

    previous = signal.signal(signal.SIGALRM, _blocked)
    signal.setitimer(signal.ITIMER_REAL, 120)  # wall time: a blocked read uses no CPU; generous under load
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


# --- every reader x every bad kind of file, in-process -------------------------------------


def _lines(line: str, header: str = "") -> Callable[[Path, int], None]:
    """A writer of a genuine text file of at least `size` bytes: `header`, then `line` repeated."""

    def write(path: Path, size: int) -> None:
        path.write_text(header + line * (size // len(line) + 1))

    return write


def _image(path: Path, size: int) -> None:
    shutil.copyfile(CIRCLE, path)  # 2.5 kB: over any bound the oversize cases set


def _mask(path: Path, size: int) -> None:
    shutil.copyfile(SCENE_MASK, path)


def _profile(path: Path, size: int) -> None:
    path.write_text("utility: {sigma: 1}\n# " + "x" * size + "\n")


MANIFEST_ROW = '{"path": "a.png", "label": "circle"}\n'
# name: (suffix, reader, writer of a genuine file, the bound's environment variable or None, the bound to set)
READERS: dict[str, tuple[str, Callable[[Path], object], Callable[[Path, int], None], str | None, int]] = {
    "image": (".png", load_image, _image, IMAGE_BYTES.env, BOUND),
    "mask": (".png", read_mask, _mask, IMAGE_BYTES.env, BOUND),
    "profile": (".yaml", Profile.load, _profile, None, 1024 * 1024),  # a fixed 1 MiB bound
    "prompts": (".txt", read_prompt_file, _lines("1+1=\n"), TEXT_BYTES.env, BOUND),
    "prompts-jsonl": (".jsonl", read_prompt_file, _lines('{"prompt": "1+1="}\n'), TEXT_BYTES.env, BOUND),
    "labels": (".txt", read_labels_file, _lines("circle\n"), TEXT_BYTES.env, BOUND),
    "manifest-csv": (".csv", read_classification_data, _lines("a.png,circle\n", "path,label\n"), TEXT_BYTES.env, BOUND),
    "manifest-jsonl": (".jsonl", read_classification_data, _lines(MANIFEST_ROW), TEXT_BYTES.env, BOUND),
    "text-data": (".jsonl", read_text_data, _lines('{"prompt": "1+1=", "answer": "2"}\n'), TEXT_BYTES.env, BOUND),
    "resume-records": (".jsonl", read_records, _lines(MANIFEST_ROW), TEXT_BYTES.env, BOUND),
}
KINDS = ["fifo", "directory", "device", "fifo-symlink", "oversize"]


def _make_bad(kind: str, path: Path, write: Callable[[Path, int], None], size: int) -> None:
    """Put a bad file of `kind` at `path`."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "device":
        path.symlink_to("/dev/zero")  # read without end by a reader that does not check
    elif kind == "fifo-symlink":
        os.mkfifo(path.with_name("real-pipe"))
        path.symlink_to(path.with_name("real-pipe"))
    else:
        write(path, size + 1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reader", list(READERS))
def test_every_reader_refuses_every_bad_file_in_one_line(reader, kind, tmp_path, monkeypatch, no_hang):
    suffix, read, write, env, size = READERS[reader]
    if env is not None:
        monkeypatch.setenv(env, str(size))
    path = tmp_path / f"input{suffix}"
    _make_bad(kind, path, write, size)
    with pytest.raises(AimError) as caught:
        read(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message, message
    if kind == "oversize":
        assert "limit" in message and (env is None or env in message), message
    elif kind != "directory":
        assert "not a regular file" in message, message


@pytest.mark.parametrize("reader", list(READERS))
def test_every_reader_still_reads_a_genuine_file(reader, tmp_path, no_hang):
    suffix, read, write, _env, _size = READERS[reader]
    path = tmp_path / f"input{suffix}"
    write(path, 10)
    (tmp_path / "a.png").write_bytes(CIRCLE.read_bytes())  # the image the manifests name
    assert read(path) is not None


def test_a_fifo_swapped_in_after_the_check_neither_blocks_nor_is_read(tmp_path, monkeypatch, no_hang):
    """The gate judges the file it opened (fstat), not what the name pointed at a moment before."""
    fifo, regular = tmp_path / "p.txt", tmp_path / "r.txt"
    os.mkfifo(fifo)
    regular.write_text("hello\n")
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: real_stat(regular if str(p) == str(fifo) else p, *a, **k))
    with pytest.raises(InputError, match="not a regular file"):
        read_regular_file(fifo, 1000, InputError, "prompts file")


def test_prompts_on_stdin_are_bounded(monkeypatch):
    import io

    monkeypatch.setenv(TEXT_BYTES.env, str(BOUND))
    with pytest.raises(InputError, match=TEXT_BYTES.env):
        gather_prompts(None, None, io.StringIO("1+1=\n" * 100), None)


# --- data sets may not reach outside their folder unless the user allows it ----------------


@pytest.fixture
def outside(tmp_path):
    """data/ holding a manifest, and an image outside it."""
    (tmp_path / "data").mkdir()
    image = tmp_path / "elsewhere" / "circle.png"
    image.parent.mkdir()
    shutil.copyfile(CIRCLE, image)
    return tmp_path


def _manifest(root: Path, row: str) -> Path:
    manifest = root / "data" / "m.csv"
    manifest.write_text(f"path,label\n{row},circle\n")
    return manifest


def _escapes(root: Path) -> dict[str, str]:
    """Manifest rows naming the outside image: relatively, absolutely, through a symlink."""
    (root / "data" / "link.png").symlink_to(root / "elsewhere" / "circle.png")
    return {
        "relative": "../elsewhere/circle.png",
        "absolute": str(root / "elsewhere" / "circle.png"),
        "symlink": "link.png",
    }


@pytest.mark.parametrize("how", ["relative", "absolute", "symlink"])
def test_manifest_rows_outside_its_folder_are_refused_unless_allowed(how, outside):
    manifest = _manifest(outside, _escapes(outside)[how])
    with pytest.raises(InputError) as caught:
        read_classification_data(manifest)
    assert "outside" in str(caught.value) and "--allow-outside-paths" in str(caught.value)
    assert "\n" not in str(caught.value)
    dataset = read_classification_data(manifest, allow_outside=True)
    assert len(dataset.items) == 1 and dataset.items[0].load().image.size == (32, 32)


def test_a_manifest_row_swapped_for_a_symlink_out_is_refused_when_read(outside):
    manifest = _manifest(outside, "inside.png")
    shutil.copyfile(CIRCLE, outside / "data" / "inside.png")
    dataset = read_classification_data(manifest)
    (outside / "data" / "inside.png").unlink()
    (outside / "data" / "inside.png").symlink_to(outside / "elsewhere" / "circle.png")
    with pytest.raises(InputError, match="outside"):
        dataset.items[0].load()


def test_image_folder_symlink_out_fails_alone_unless_allowed(outside):
    folder = outside / "data" / "circle"
    folder.mkdir()
    shutil.copyfile(CIRCLE, folder / "inside.png")
    (folder / "link.png").symlink_to(outside / "elsewhere" / "circle.png")
    items = {item.name: item for item in read_classification_data(outside / "data").items}
    items["circle/inside.png"].load()
    with pytest.raises(InputError, match="outside"):
        items["circle/link.png"].load()
    allowed = {item.name: item for item in read_classification_data(outside / "data", allow_outside=True).items}
    allowed["circle/link.png"].load()


def test_segmentation_mask_symlink_out_fails_alone_unless_allowed(outside):
    data = outside / "data"
    (data / "images").mkdir()
    (data / "masks").mkdir()
    for name in ("a", "b"):
        shutil.copyfile(SCENE, data / "images" / f"{name}.png")
    shutil.copyfile(SCENE_MASK, data / "masks" / "a.png")
    shutil.copyfile(SCENE_MASK, outside / "elsewhere" / "b.png")
    (data / "masks" / "b.png").symlink_to(outside / "elsewhere" / "b.png")
    results = list(read_segmentation_data(data).inputs())
    assert not isinstance(results[0], FailedInput)
    assert isinstance(results[1], FailedInput) and "outside" in results[1].reason, results[1]
    allowed = list(read_segmentation_data(data, allow_outside=True).inputs())
    assert not any(isinstance(item, FailedInput) for item in allowed)


# --- through the real CLI: one line, exit 2 (1 for one bad input of a batch), no hang --------


def _one_line_error(result, code: int, *fragments: str) -> None:
    """Exit `code`, one line on stderr naming the problem, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def _aim(*args: str, env: dict[str, str] | None = None):
    return run_aim(*args, env=env, timeout=CLI_TIMEOUT)


@pytest.mark.parametrize(
    "name, args",
    [
        ("p.txt", ["generate", "--prompts", "{}", "-q"]),
        ("labels.txt", ["classify", str(CIRCLE), "--labels", "{}", "-q"]),
        ("data.csv", ["calibrate", "--target-acc", "0.5", "--data", "{}", "-q"]),
        ("data.jsonl", ["calibrate", "--task", "generate", "--target-acc", "0.5", "--data", "{}", "-q"]),
    ],
)
def test_cli_refuses_a_fifo_in_one_line(name, args, tmp_path):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    result = _aim(*[a.replace("{}", str(fifo)) for a in args])
    _one_line_error(result, 2, str(fifo), "not a regular file")


def test_cli_refuses_an_oversize_prompts_file_naming_the_bound(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("1+1=\n" * 100)
    result = _aim("generate", "--prompts", str(prompts), "-q", env={TEXT_BYTES.env: str(BOUND)})
    _one_line_error(result, 2, str(prompts), TEXT_BYTES.env)


def test_cli_batch_with_a_fifo_image_processes_the_rest(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    shutil.copyfile(SCENE, tmp_path / SCENE.name)
    out = tmp_path / "out"
    result = _aim("segment", str(fifo), str(tmp_path / SCENE.name), "-o", str(out), "-q")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    failed = [line for line in result.stderr.splitlines() if line.startswith("aim: failed:")]
    assert len(failed) == 1 and str(fifo) in failed[0] and "not a regular file" in failed[0], result.stderr
    assert (out / "scene_0.png").is_file()


def test_cli_manifest_escape_is_refused_and_the_flag_allows_it(outside):
    manifest = outside / "data" / "m.csv"
    rows = [f"../elsewhere/{p.name},{p.stem.rsplit('_', 1)[0]}" for p in (CIRCLE, SQUARE)]
    for p in (CIRCLE, SQUARE):
        shutil.copyfile(p, outside / "elsewhere" / p.name)
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    refused = _aim("calibrate", "--target-acc", "0.5", "--data", str(manifest), "-q")
    _one_line_error(refused, 2, str(manifest), "outside", "--allow-outside-paths")
    allowed = _aim("calibrate", "--target-acc", "0.5", "--data", str(manifest), "--allow-outside-paths", "-q")
    assert "outside" not in allowed.stderr and "Traceback" not in allowed.stderr, allowed.stderr
    assert allowed.returncode == 0, allowed.stderr
    assert float(allowed.stdout.strip()) >= 0
