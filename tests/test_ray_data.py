"""`aim classify / segment --engine ray` on a local Ray (2 CPUs): the same bytes as one process, on any worker count.

Needs the ray extra (`make test-ray`); skipped cleanly without it.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from tests.test_ray_tiers import CLASSIFY_SAMPLES, KEY, SEGMENT_SAMPLES, write_tiers

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """A local Ray of 2 CPUs for this module (the CLI joins it instead of starting its own)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiers(tmp_path_factory) -> Path:
    return write_tiers(tmp_path_factory.mktemp("tiers") / "tiers")


@pytest.fixture
def run(capsys, monkeypatch):
    """Run `aim ARGS` in this process (with the tiers' key); returns the exit code."""
    monkeypatch.setenv("AIM_NOISE_KEY", KEY)

    def call(*args: str) -> int:
        from aim_cli.cli import main

        with pytest.raises(SystemExit) as done:
            main([*args, "--device", "cpu", "--quiet"])
        capsys.readouterr()
        return int(done.value.code or 0)

    return call


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The demo's classify samples and one file that is not an image (it must fail alone, in its place)."""
    folder = tmp_path_factory.mktemp("inputs") / "images"
    folder.mkdir()
    for path in CLASSIFY_SAMPLES:
        shutil.copy(path, folder / path.name)
    (folder / "dented_0.png").write_bytes(b"not a png")
    return folder


def test_interrupted_keyed_job_resumes_on_two_workers_to_what_one_process_writes(run, tiers, inputs, tmp_path):
    """A run stopped after 5 inputs, resumed with --engine ray on 2 workers: byte for byte the local run."""
    local, resumed = tmp_path / "local.jsonl", tmp_path / "resumed.jsonl"
    profile = ["--profile", str(tiers / "free.yaml"), "-k", "3", "-b", "4"]
    assert run("classify", str(inputs), *profile, "-o", str(local)) == 1  # 1: one input failed, the rest written
    first = sorted(inputs.glob("*.png"))[:5]  # what the interrupted run had written (its broken file failed)
    assert run("classify", *map(str, first), *profile, "-o", str(resumed)) == 1
    assert (
        run("classify", str(inputs), *profile, "-o", str(resumed), "--engine", "ray", "--workers", "2", "--resume") == 1
    )
    assert resumed.read_bytes() == local.read_bytes()
    records = [json.loads(line) for line in local.read_text().splitlines()]
    assert len(records) == len(CLASSIFY_SAMPLES) and all(r["keyed"] for r in records)


def test_seeded_job_on_two_workers_is_the_single_process_batch_function(run, inputs, tmp_path):
    """Seeded noise on Ray is keyed on (seed, pixels): neither the worker count nor the chunking changes a record."""
    from aim_cli.engines.ray_data import JobSpec, TaskWorker
    from aim_cli.plans import plan_modulation
    from aim_cli.profile import Profile

    spread = tmp_path / "two.jsonl"
    assert (
        run(
            "classify",
            str(inputs),
            "--sigma",
            "3",
            "--seed",
            "11",
            "-b",
            "3",
            "-k",
            "2",
            "--engine",
            "ray",
            "--workers",
            "2",
            "-o",
            str(spread),
        )
        == 1
    )
    records = [json.loads(line) for line in spread.read_text().splitlines()]
    spec = JobSpec("classify", None, device="cpu", batch_size=32, topk=2)  # one process, one chunk of everything
    worker = TaskWorker(spec, plan_modulation(Profile(sigma=3.0, seed=11), [str(i) for i in range(10)]))
    alone = [item for item in worker.run(sorted(inputs.iterdir())) if not hasattr(item, "reason")]
    assert [r["path"] for r in records] == [str(item.path) for item in alone]
    for record, item in zip(records, alone):
        assert [p["label"] for p in record["topk"]] == [p.label for p in item.top]
        assert [p["probability"] for p in record["topk"]] == pytest.approx([p.probability for p in item.top], abs=2e-6)
    assert {r["seed"] for r in records} == {11}
    wrong = sum(r["prediction"] != Path(r["path"]).stem.rsplit("_", 1)[0] for r in records)
    assert wrong > 0  # sigma 3 moves some of the 12 predictions: the noise was applied


def test_keyed_segment_on_two_workers_writes_the_same_masks_and_summary(run, tiers, tmp_path):
    local, spread = tmp_path / "local", tmp_path / "ray"
    args = [*map(str, SEGMENT_SAMPLES), "--profile", str(tiers / "free.yaml"), "-b", "2", "--compare"]
    assert run("segment", *args, "-o", str(local)) == 0
    assert run("segment", *args, "-o", str(spread), "--engine", "ray", "--workers", "2") == 0
    written = sorted(p.relative_to(local) for p in local.rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(spread) for p in spread.rglob("*") if p.is_file())
    assert len(written) == len(SEGMENT_SAMPLES) + 1  # the masks and summary.jsonl
    for name in written:
        assert (spread / name).read_bytes() == (local / name).read_bytes(), name


def test_evaluation_against_masks_stays_local(run, tmp_path, capsys):
    masks = tmp_path / "masks"
    masks.mkdir()
    assert (
        run("segment", str(SEGMENT_SAMPLES[0]), "--masks", str(masks), "--engine", "ray", "-o", str(tmp_path / "o"))
        == 2
    )
    assert not (tmp_path / "o").exists()


def test_the_python_api_on_ray_workers_gives_the_local_records(inputs, monkeypatch):
    """aim.classify / aim.segment with engine='ray': the records the same calls give in this process (keyed noise)."""
    import aim_cli as aim

    monkeypatch.setenv("AIM_NOISE_KEY", KEY)
    profile = {"utility": {"sigma": 2.0}, "noise": {"key_env": "AIM_NOISE_KEY"}}
    local = list(aim.classify(None, inputs, profile, topk=2, batch_size=4, device="cpu"))
    spread = list(aim.classify(None, inputs, profile, topk=2, batch_size=4, device="cpu", engine="ray", workers=2))
    assert [item.path for item in spread] == [item.path for item in local]
    assert sum(isinstance(item, aim.FailedInput) for item in spread) == 1  # the file that is not an image
    for ours, theirs in zip(local, spread):
        if not isinstance(ours, aim.FailedInput):
            assert [p.label for p in theirs.top] == [p.label for p in ours.top]
            assert [p.probability for p in theirs.top] == pytest.approx([p.probability for p in ours.top], abs=2e-6)
    masks = list(aim.segment(None, SEGMENT_SAMPLES, profile, batch_size=2, device="cpu"))
    ray_masks = list(aim.segment(None, SEGMENT_SAMPLES, profile, batch_size=2, device="cpu", engine="ray", workers=2))
    assert [m.path for m in ray_masks] == [m.path for m in masks]
    for ours, theirs in zip(masks, ray_masks):
        assert (theirs.prediction == ours.prediction).all()
