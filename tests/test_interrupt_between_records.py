"""A signal that lands in the caller's loop, between two records, is still an interrupt for the run's files.

The task API's runs are generators: a signal raised in the consumer (the CLI's loop, a user's
loop) stops the run with GeneratorExit when the consumer closes it. The finished records must
then be kept for --resume, as when the signal lands inside the run; a plain early stop (no
signal) writes nothing. Found by `make test` on a busy machine (issue 23): the segment run lost
its summary.jsonl when SIGTERM arrived between two masks.
"""

from __future__ import annotations

import json
import signal
from contextlib import closing
from pathlib import Path

import pytest

import aim_cli as aim
from aim_cli import demo, interrupts


def _classify(out: Path):
    return aim.classify(None, None, 1.0, seed=0, batch_size=1, output=out / "records.jsonl"), out / "records.jsonl"


def _segment(out: Path):
    return aim.segment(None, None, 1.0, seed=0, batch_size=1, output_dir=out / "masks"), out / "masks" / "summary.jsonl"


def _generate(out: Path):
    run = aim.generate(None, ["1+1=", "2+2=", "3+3="], 1.0, seed=0, batch_size=1, output=out / "answers.jsonl")
    return run, out / "answers.jsonl"


RUNS = {"classify": _classify, "segment": _segment, "generate": _generate}


def _stream(run):
    """The run's records as the CLI reads them (one generator with close())."""
    if isinstance(run, aim.ClassificationRun):
        return run.results()
    if isinstance(run, aim.SegmentRun):
        return run.stream()
    return run


@pytest.mark.parametrize("task", RUNS)
def test_a_signal_between_two_records_keeps_the_finished_ones(task, tmp_path, monkeypatch):
    run, records = RUNS[task](tmp_path)
    with closing(_stream(run)) as stream:
        first = next(stream)
        assert not isinstance(first, aim.FailedInput)
        monkeypatch.setattr(interrupts, "_received", [signal.SIGTERM])  # aim's handler saw SIGTERM in the caller
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(lines) == 1  # the finished record, whole, for --resume


@pytest.mark.parametrize("task", RUNS)
def test_stopping_early_without_a_signal_writes_nothing(task, tmp_path, monkeypatch):
    monkeypatch.setattr(interrupts, "_received", [])
    run, records = RUNS[task](tmp_path)
    with closing(_stream(run)) as stream:
        next(stream)
    assert not records.exists()


def test_the_demo_inputs_have_more_than_one_record():
    """Each run above has a second record to stop before (else the tests would prove nothing)."""
    assert len(list(demo.samples_dir("classify").iterdir())) > 1
    assert len(list(demo.samples_dir("segment").iterdir())) > 1
