"""Legal long names, closed or broken stdout, control characters, outputs in the way, NaN (issue 15)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from aim_cli import demo
from aim_cli.errors import AimError
from aim_cli.io import RecordWriter, atomic_open, write_json_atomic
from tests.conftest import REPO, aim_env, run_aim

SEGMENT_SAMPLES = demo.samples_dir("segment")
CLASSIFY_SAMPLES = demo.samples_dir("classify")
ESC = "\x1b"


def _name(length: int, suffix: str = "") -> str:
    """A file name of exactly `length` bytes."""
    return "n" * (length - len(suffix)) + suffix


# --- long names: legal ones work, impossible ones fail alone or up front ----------------------


def test_atomic_write_to_a_255_byte_name(tmp_path):
    target = tmp_path / _name(255, ".txt")
    with atomic_open(target) as handle:
        handle.write("ok")
    assert target.read_text() == "ok"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_segment_long_image_names(tmp_path):
    """A 250-byte name is segmented; one whose mask name cannot exist fails alone, the rest go on."""
    images, out = tmp_path / "images", tmp_path / "out"
    images.mkdir()
    shutil.copy(SEGMENT_SAMPLES / "scene_0.png", images / "scene_0.png")
    shutil.copy(SEGMENT_SAMPLES / "scene_1.png", images / _name(250, ".png"))
    shutil.copy(SEGMENT_SAMPLES / "scene_2.png", images / _name(255, ".z"))  # its mask name would be 257 bytes
    files = [images / "scene_0.png", images / _name(250, ".png"), images / _name(255, ".z")]
    result = run_aim("segment", *map(str, files), "--overlay", "-o", str(out))
    assert result.returncode == 1, result.stderr
    assert "1 input(s) failed; the others were processed" in result.stderr
    assert "255-byte" in result.stderr and "Traceback" not in result.stderr
    assert (out / _name(250, ".png")).is_file() and (out / "overlays" / _name(250, ".png")).is_file()
    assert (out / "scene_0.png").is_file()
    records = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]
    assert len(records) == 2


@pytest.mark.parametrize("length, code", [(251, 0), (256, 2)])
def test_classify_output_name_length(tmp_path, length, code):
    """A legal 251-byte -o is written; a 256-byte one is refused before the model loads."""
    output = tmp_path / _name(length, ".jsonl")
    model = [] if code == 0 else ["--model", str(tmp_path / "no-such-model")]
    result = run_aim("classify", str(CLASSIFY_SAMPLES / "circle_0.png"), "-o", str(output), *model)
    assert result.returncode == code, result.stderr
    if code == 0:
        assert [p.name for p in tmp_path.iterdir()] == [output.name]
    else:
        assert f"{length} bytes" in result.stderr and "255-byte" in result.stderr, result.stderr
        assert "no-such-model" not in result.stderr  # refused before the model was looked at


def test_segment_output_dir_name_over_the_limit(tmp_path):
    result = run_aim("segment", "-o", str(tmp_path / _name(256)), "--model", str(tmp_path / "no-such-model"))
    assert result.returncode == 2, result.stderr
    assert "256 bytes" in result.stderr and "no-such-model" not in result.stderr, result.stderr


# --- stdout: closed or broken pipe never exits 0 with results lost --------------------------


STDOUT_COMMANDS = {
    "classify": ["classify", str(CLASSIFY_SAMPLES / "circle_0.png")],
    "generate": ["generate", "--prompt", "23+45=", "-n", "2"],
    "calibrate": ["calibrate", "--target-acc", "0.5", "--limit", "20"],
}


@pytest.mark.parametrize("command", list(STDOUT_COMMANDS))
def test_closed_stdout_is_refused_up_front(command):
    args = " ".join(f"'{a}'" for a in STDOUT_COMMANDS[command])
    result = subprocess.run(
        ["bash", "-c", f"exec '{sys.executable}' -m aim_cli {args} >&-"],
        capture_output=False,
        stderr=subprocess.PIPE,
        text=True,
        env=aim_env(),
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "standard output is closed" in lines[0], result.stderr


@pytest.mark.parametrize("command", ["classify", "generate"])
def test_broken_pipe_exits_141_quietly(command):
    """`aim ... | head -0`: the reader went away; exit 141 like a tool killed by SIGPIPE, no traceback."""
    process = subprocess.Popen(
        [sys.executable, "-m", "aim_cli", *STDOUT_COMMANDS[command], "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=aim_env(),
        cwd=REPO,
        text=True,
    )
    process.stdout.close()  # the reader is gone before aim writes a byte
    stderr = process.stderr.read()
    assert process.wait(timeout=300) == 141, stderr
    assert stderr == "", stderr


# --- control characters in names are shown escaped -------------------------------------------


def test_control_characters_in_file_names_are_escaped(tmp_path):
    good = tmp_path / f"good{ESC}]0;owned\a.png"
    bad = tmp_path / f"bad{ESC}[2J\nx.png"
    shutil.copy(CLASSIFY_SAMPLES / "circle_0.png", good)
    bad.write_bytes(b"not an image")
    result = run_aim("classify", str(good), str(bad), "--profile", str(tmp_path / f"p{ESC}[1m.yaml"))
    assert result.returncode == 2 and "\\x1b[1m.yaml" in result.stderr, result.stderr  # main()'s error line
    assert ESC not in result.stderr
    result = run_aim("classify", str(good), str(bad))
    assert result.returncode == 1, result.stderr
    assert ESC not in result.stdout + result.stderr and "\a" not in result.stdout + result.stderr
    assert "bad\\x1b[2J\\nx.png" in result.stderr  # the failure line, still one line
    assert len([line for line in result.stderr.splitlines() if "failed:" in line]) == 1


# --- every output path is checked before any work --------------------------------------------


def test_segment_summary_folder_is_found_before_any_work(tmp_path):
    out = tmp_path / "out"
    (out / "summary.jsonl").mkdir(parents=True)
    result = run_aim("segment", str(SEGMENT_SAMPLES / "scene_0.png"), "-o", str(out))
    assert result.returncode == 2, result.stderr
    assert "summary.jsonl" in result.stderr and "directory" in result.stderr, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["summary.jsonl"]  # no mask was written first


# --- JSON with NaN or infinity is refused, never written -------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_numbers_are_refused(tmp_path, value):
    records, report = tmp_path / "r.jsonl", tmp_path / "e.json"
    report.write_text("old\n")
    writer = RecordWriter(records)
    with pytest.raises(AimError, match="probability is not a finite number"):
        writer.write({"path": "a.png", "probability": value})
    assert not records.exists()
    with pytest.raises(AimError, match=r"clean\.miou is not a finite number"):
        write_json_atomic({"clean": {"miou": value}}, report)
    assert report.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["e.json"]  # no temp file left either
