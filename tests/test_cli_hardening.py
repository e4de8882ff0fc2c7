"""The CLI never loses a user's data and says plainly what went wrong (issue: hardening)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from aim_cli import demo
from aim_cli.errors import AimError
from aim_cli.io import RecordWriter, atomic_open, check_output_file, refuse_clobbering
from tests.conftest import MARKER_TIMEOUT_S, REPO, LineReader, aim_env, assert_user_error, run_aim, wait_until

CLASSIFY_SAMPLES = demo.samples_dir("classify")
SEGMENT_SAMPLES = demo.samples_dir("segment")
CIRCLE = CLASSIFY_SAMPLES / "circle_0.png"
SQUARE = CLASSIFY_SAMPLES / "square_0.png"


def _parts(directory: Path) -> list[Path]:
    """Temporary files an interrupted atomic write would leave behind."""
    return [p for p in directory.rglob("*") if p.name.endswith(".part")]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- usage errors: click's message and exit 2, never "internal error" -------------------------


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["classify", "--sigma", "abc"], "invalid value for '--sigma'"),
        (["classify", "--bogus"], "no such option"),
        (["frobnicate"], "no such command"),
        (["classify", "--sigma"], "requires an argument"),
        (["calibrate", "--task", "nonsense"], "invalid value for '--task'"),
    ],
)
def test_usage_errors_exit_2_with_click_message(args, fragment):
    result = run_aim(*args)
    assert_user_error(result, 2, fragment)
    assert "internal error" not in result.stderr


def test_bare_aim_shows_usage_and_exits_2():
    result = run_aim()
    assert result.returncode == 2, result.stderr
    assert "Usage:" in result.stdout + result.stderr
    assert "internal error" not in result.stderr


def test_help_exits_0():
    assert run_aim("classify", "--help").returncode == 0


def test_debug_as_an_option_value_is_kept():
    """`--prompt --debug` asks for the text '--debug'; it must not be taken as the global flag."""
    result = run_aim("generate", "--prompt", "--debug", "--max-new-tokens", "2", "-q")
    assert result.returncode == 0, result.stderr


# --- outputs never replace inputs ------------------------------------------------------------


def test_generate_output_over_prompts_file_is_refused(tmp_path):
    prompts = tmp_path / "q.jsonl"
    prompts.write_text('{"prompt": "1+1=", "id": 7}\n')
    before = prompts.read_bytes()
    result = run_aim("generate", "--prompts", str(prompts), "-o", str(prompts))
    assert_user_error(result, 2, "would overwrite", "q.jsonl")
    assert prompts.read_bytes() == before


def test_classify_output_over_an_input_file_is_refused(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label\n")
    shutil.copy(CIRCLE, tmp_path / "x.png")
    result = run_aim("classify", str(manifest), str(tmp_path / "x.png"), "-o", str(manifest))
    assert_user_error(result, 2, "would overwrite")
    assert manifest.read_text() == "path,label\n"


def test_output_hard_linked_to_an_input_is_refused(tmp_path):
    image = tmp_path / "x.png"
    shutil.copy(CIRCLE, image)
    link = tmp_path / "out.jsonl"
    os.link(image, link)
    result = run_aim("classify", str(image), "-o", str(link))
    assert_user_error(result, 2, "would overwrite")
    assert Image.open(image).size  # still an image


def test_segment_output_dir_over_inputs_is_refused(tmp_path):
    shutil.copy(SEGMENT_SAMPLES / "scene_0.png", tmp_path / "scene_0.png")
    result = run_aim("segment", str(tmp_path / "scene_0.png"), "-o", str(tmp_path))
    assert_user_error(result, 2, "would overwrite")


def test_calibrate_outputs_over_its_data_are_refused(tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text('{"prompt": "1+1=", "choices": ["2", "3"], "answer": 0}\n')
    link = tmp_path / "report.json"
    os.link(data, link)
    result = run_aim("calibrate", "--task", "generate", "--target-acc", "0.5", "--data", str(data), "--json", str(link))
    assert_user_error(result, 2, "would overwrite")


def test_output_inside_an_input_folder_is_refused(tmp_path):
    """A --data folder or local model owns what is under it: no output goes inside, even via a link."""
    data = tmp_path / "data"
    (data / "cat").mkdir(parents=True)
    shutil.copy(CIRCLE, data / "cat" / "x.png")
    with pytest.raises(AimError, match="would write inside --data"):
        refuse_clobbering([("--plot", data / "cat" / "x.png")], [("--data", data)])
    with pytest.raises(AimError, match="would write inside --data"):
        refuse_clobbering([("--plot", data / "cat" / "new.png")], [("--data", data)])
    elsewhere = tmp_path / "curve.png"
    os.link(data / "cat" / "x.png", elsewhere)  # the same file under a second name, outside
    with pytest.raises(AimError, match="would write inside --data"):
        refuse_clobbering([("--plot", elsewhere)], [("--data", data)])
    elsewhere.unlink()
    refuse_clobbering([("--plot", elsewhere)], [("--data", data)])  # a new file outside is fine


def test_output_inside_a_local_model_directory_is_refused(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "notes.jsonl").write_text("{}\n")
    result = run_aim("classify", str(CIRCLE), "-m", str(model), "-o", str(model / "notes.jsonl"))
    assert_user_error(result, 2, "would write inside --model")
    assert (model / "notes.jsonl").read_text() == "{}\n"


def test_calibrate_plot_over_an_image_of_its_manifest_is_refused(tmp_path):
    image = tmp_path / "pics" / "x.png"
    image.parent.mkdir()
    shutil.copy(CIRCLE, image)
    manifest = tmp_path / "data.csv"
    manifest.write_text("path,label\npics/x.png,circle\n")
    before = image.read_bytes()
    result = run_aim(
        "calibrate", "--target-acc", "0.5", "-m", "torchvision:resnet18", "--data", str(manifest), "--plot", str(image)
    )
    assert_user_error(result, 2, "would overwrite --data image")
    assert image.read_bytes() == before


# --- nothing emptied when nothing succeeded --------------------------------------------------


def test_all_inputs_failing_keeps_the_old_output(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not an image")
    output = tmp_path / "o.jsonl"
    output.write_text('{"precious": true}\n')
    result = run_aim("classify", str(bad), "-o", str(output))
    assert_user_error(result, 1, "no input succeeded")
    assert output.read_text() == '{"precious": true}\n'
    assert not _parts(tmp_path)


def test_segment_with_every_input_failing_writes_no_summary(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    out = tmp_path / "out"
    result = run_aim("segment", str(bad), "-o", str(out))
    assert_user_error(result, 1, "no input succeeded")
    assert not (out / "summary.jsonl").exists()


# --- environment failures name the user's path, early ----------------------------------------


def test_unwritable_output_directory_fails_before_work(tmp_path, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("aim_cli.io.tempfile.mkstemp", refuse)
    with pytest.raises(AimError, match=r"cannot write .*out\.jsonl: Permission denied"):
        check_output_file(tmp_path / "out.jsonl", (".jsonl",))


def test_full_disk_names_the_output_not_the_temp_file(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    writer = RecordWriter(target)

    class FullDisk:
        def write(self, _text):
            raise OSError(errno.ENOSPC, "No space left on device")

    writer._handle = FullDisk()
    with pytest.raises(AimError) as caught:
        writer.write({"a": 1})
    assert str(target) in str(caught.value) and "No space left" in str(caught.value)
    assert ".part" not in str(caught.value)
    assert target.read_text() == "old\n"
    assert not _parts(tmp_path)


def test_pipe_as_output_is_refused(tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    result = run_aim("classify", str(CIRCLE), "-o", str(fifo))
    assert_user_error(result, 2, "not a regular file")


def test_rewriting_keeps_the_file_mode(tmp_path):
    target = tmp_path / "secret.jsonl"
    target.write_text("old\n")
    target.chmod(0o600)
    with atomic_open(target) as handle:
        handle.write("new\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text() == "new\n"


# --- signals: finished outputs whole, no temp files, one line, 130/143 -----------------------


@pytest.fixture
def big_scenes(tmp_path):
    """Scenes large enough that segmenting them takes a few seconds in all."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    scene = Image.open(SEGMENT_SAMPLES / "scene_0.png").resize((1600, 1600))
    for i in range(10):
        scene.save(folder / f"s{i}.png")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_leaves_whole_outputs_and_no_temp_files(big_scenes, tmp_path, signum, code):
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "aim_cli", "segment", str(big_scenes), "-o", str(out), "--seed", "0", "-b", "1"],
        cwd=REPO,
        env=aim_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The second mask on disk: the first is finished and its summary record written.
    wait_until(lambda: (out / "s1.png").exists(), "the second mask", process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=MARKER_TIMEOUT_S)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert process.returncode == code, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr
    assert not _parts(out)
    for mask in out.glob("*.png"):
        Image.open(mask).load()  # every finished mask is a whole PNG
    # The summary of the finished masks was kept, so --resume redoes none of them.
    finished = {r["mask"]: (out / r["mask"]).stat().st_mtime_ns for r in _jsonl(out / "summary.jsonl")}
    assert finished
    resumed = run_aim("segment", str(big_scenes), "-o", str(out), "--seed", "0", "-b", "1", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    records = _jsonl(out / "summary.jsonl")
    assert sorted(r["mask"] for r in records) == sorted(f"s{i}.png" for i in range(10))
    for name, mtime in finished.items():
        assert (out / name).stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_interrupted_classify_keeps_an_existing_output_unchanged(tmp_path):
    """Without --resume, a signal mid-run leaves the older -o file exactly as it was."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3000):  # hard links: many inputs for free
        os.link(CIRCLE, images / f"c{i}.png")
    output = tmp_path / "o.jsonl"
    output.write_text('{"precious": true}\n')
    process = subprocess.Popen(
        [sys.executable, "-m", "aim_cli", "classify", str(images), "-o", str(output), "-b", "1", "--seed", "0"],
        cwd=REPO,
        env=aim_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: bool(_parts(tmp_path)), "the output's temp file", process)  # the run is writing
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=MARKER_TIMEOUT_S)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert process.returncode == 143, stderr
    assert "interrupted (SIGTERM)" in stderr and "Traceback" not in stderr, stderr
    assert output.read_text() == '{"precious": true}\n'
    assert not _parts(tmp_path)


# --- resume ----------------------------------------------------------------------------------


def test_classify_resume_keeps_recorded_inputs_and_adds_the_rest(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for source in (CIRCLE, SQUARE):
        shutil.copy(source, images / source.name)
    output = tmp_path / "o.jsonl"
    first = run_aim("classify", str(images / CIRCLE.name), "-o", str(output), "--seed", "1")
    assert first.returncode == 0, first.stderr
    old = _jsonl(output)[0] | {"marker": "kept"}
    output.write_text(json.dumps(old) + "\n")
    result = run_aim("classify", str(images), "-o", str(output), "--seed", "1", "--resume")
    assert result.returncode == 0, result.stderr
    records = _jsonl(output)
    assert [r.get("marker") for r in records].count("kept") == 1
    assert sorted(Path(r["path"]).name for r in records) == sorted([CIRCLE.name, SQUARE.name])


def test_generate_resume_answers_only_missing_prompts(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("1+1=\n2+2=\n")
    output = tmp_path / "o.jsonl"
    output.write_text(json.dumps({"prompt": "1+1=", "completion": "kept"}) + "\n")
    result = run_aim("generate", "--prompts", str(prompts), "-o", str(output), "--resume", "--seed", "0")
    assert result.returncode == 0, result.stderr
    records = _jsonl(output)
    assert [r["prompt"] for r in records] == ["1+1=", "2+2="]
    assert records[0]["completion"] == "kept" and records[1]["completion"] == "4"


def test_resume_without_output_is_a_usage_error():
    assert_user_error(run_aim("classify", str(CIRCLE), "--resume"), 2, "--resume needs --output")


# --- segment output names cannot collide -----------------------------------------------------


def test_segment_names_mirror_the_input_tree_and_overlays_stay_apart(tmp_path):
    tree = tmp_path / "in"
    for sub in ("a", "b"):
        (tree / sub).mkdir(parents=True)
        shutil.copy(SEGMENT_SAMPLES / "scene_0.png", tree / sub / "x.png")
    shutil.copy(SEGMENT_SAMPLES / "scene_1.png", tree / "a" / "x_overlay.png")
    shutil.copy(SEGMENT_SAMPLES / "scene_2.png", tree / "a" / "y.jpg.png")
    Image.open(SEGMENT_SAMPLES / "scene_2.png").save(tree / "a" / "y.jpg")
    out = tmp_path / "out"
    result = run_aim("segment", str(tree), "-o", str(out), "--overlay", "--seed", "0", "-q")
    assert result.returncode in (0, 2), result.stderr
    if result.returncode == 2:  # y.jpg's mask name would clash with y.jpg.png's: detected up front
        assert ("would overwrite" in result.stderr and not out.exists()) or not list(out.rglob("*.png"))
        (tree / "a" / "y.jpg.png").unlink()
        result = run_aim("segment", str(tree), "-o", str(out), "--overlay", "--seed", "0", "-q")
        assert result.returncode == 0, result.stderr
    records = _jsonl(out / "summary.jsonl")
    masks = [r["mask"] for r in records]
    overlays = [r["overlay"] for r in records]
    assert len(set(masks + overlays)) == 2 * len(records)
    assert {"a/x.png", "b/x.png", "a/x_overlay.png"} <= set(masks)
    assert all(o.startswith("overlays/") for o in overlays)
    for name in masks + overlays:
        assert (out / name).is_file()


# --- rich markup and stdin -------------------------------------------------------------------


def test_markup_in_file_names_is_shown_literally(tmp_path):
    image = tmp_path / "[bold]a.png"
    shutil.copy(CIRCLE, image)
    result = run_aim("classify", str(image), "-q")
    assert result.returncode == 0, result.stderr
    assert "[bold]a.png" in result.stdout


@pytest.mark.slow
def test_waiting_on_an_open_stdin_says_so():
    """A pipe that stays open and silent gets a notice; piped prompts that are there get none."""
    process = subprocess.Popen(
        [sys.executable, "-m", "aim_cli", "generate", "--max-new-tokens", "3"],
        cwd=REPO,
        env=aim_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = LineReader(process.stderr)
    try:
        stderr.wait_for("reading prompts from standard input")  # written once the grace period passed unfed
        process.stdin.write("1+1=\n")
        process.stdin.close()
        out = process.stdout.read()  # to its end: stderr drains on its own thread meanwhile
        process.wait(timeout=MARKER_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    err = stderr.text()
    assert process.returncode == 0, err
    assert out.strip(), err
    piped = run_aim("generate", "--max-new-tokens", "3", stdin="1+1=\n")
    assert piped.returncode == 0 and "reading prompts" not in piped.stderr
