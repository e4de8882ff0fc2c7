"""The tier server's hostile table (tests/server_cases.py) against a live Ray Serve over HTTP, and
`aim serve` itself: a busy port, two servers started at once, an unreachable cluster.

Needs the ray extra (`make test-ray`); skipped cleanly without it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.server_cases import CASES, DEMO, ENDPOINTS, KEY, Case, write_tiers

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
MODELS = {"classify": DEMO / "classifier", "segment": DEMO / "segmenter"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def tiers(tmp_path_factory) -> Path:
    return write_tiers(tmp_path_factory.mktemp("live") / "tiers")


@pytest.fixture(scope="module")
def url(tiers):
    """The table's four endpoints at /floor, /strict, /open and /segment on one local Ray of 2 CPUs."""
    from aim_cli.engines.ray_serve import start, vision_app
    from aim_cli.engines.vision_tiers import EndpointSpec

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    port = free_port()
    common = {"num_cpus": 0.25, "env": {"AIM_NOISE_KEY": KEY}, "max_batch_size": 4, "batch_wait_s": 0.01}
    try:
        for index, (name, options) in enumerate(ENDPOINTS.items()):
            options = dict(options)
            task = options.pop("task")
            spec = EndpointSpec(task, str(MODELS[task]), profiles=str(tiers), device="cpu", **options)
            app = vision_app(spec, **common)
            if index == 0:  # the first through aim's own start (port check, proxy), the others beside it
                start(app, host="127.0.0.1", port=port, route_prefix=f"/{name}")
            else:
                serve.run(app, name=name, route_prefix=f"/{name}")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def send(address: str, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """POST; (status, JSON answer) for successes and refusals alike."""
    request = urllib.request.Request(address, data=body, headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        text = refused.read()
        try:
            return refused.code, json.loads(text)
        except ValueError:
            return refused.code, {"error": text.decode("utf-8", "replace")[:200]}


def observed(url: str, case: Case) -> tuple[int, str]:
    """(status, error or 'tier=NAME') of one case over HTTP."""
    content_type, body = case.request()
    status, answer = send(f"{url}/{case.endpoint}{case.query}", content_type, body)
    return status, answer["error"] if status != 200 else f"tier={answer.get('tier')}"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_requests_over_http(url, case):
    status, said = observed(url, case)
    assert (status, case.fragment in said) == (case.status, True), said
    assert "\n" not in said and "Traceback" not in said


def test_transport_level_abuse_is_refused_without_harm(url):
    """Headers and query strings past any sane size, and other methods: never a 5xx, and the server still answers."""
    from tests.server_cases import SAMPLE

    image = SAMPLE.read_bytes()
    # Ray's proxy takes a 200 KB header (its own bound, not aim's): answered, not a 5xx, nothing breaks.
    status, answer = send(f"{url}/floor", "image/png", image, {"X-Padding": "a" * 200_000})
    assert status < 500 and (status != 200 or answer["tier"] == "free")
    status, _ = send(f"{url}/floor?" + "&".join(f"f{i}=1" for i in range(20_000)), "image/png", image)
    assert 400 <= status < 500
    request = urllib.request.Request(f"{url}/floor", data=image, method="PUT")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 405
    assert send(f"{url}/floor", "image/png", image)[0] == 200  # still serving
    with urllib.request.urlopen(f"{url}/floor", timeout=60) as response:
        info = json.loads(response.read())
    assert info["default_tier"] == "free" and "never less noise" in info["serves"][0]


def aim_serve(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`aim serve ...` as a process of its own (it blocks while it serves)."""
    return subprocess.Popen(
        [sys.executable, "-m", "aim_cli", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "AIM_NOISE_KEY": KEY, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


def test_a_busy_port_is_exit_2_before_ready(tiers):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        process = aim_serve(str(MODELS["classify"]), "--profiles", str(tiers), "--port", str(port))
        _out, err = process.communicate(timeout=300)
    assert process.returncode == 2, err
    assert f"port {port} on 127.0.0.1 is in use by another server" in err and "ready" not in err
    assert "Traceback" not in err


def test_an_unreachable_cluster_is_exit_2_within_the_bound(tiers):
    started = time.monotonic()
    process = aim_serve(
        str(MODELS["classify"]), "--profiles", str(tiers), "--port", str(free_port()),
        env={"RAY_ADDRESS": "192.0.2.1:6379", "AIM_RAY_CONNECT_TIMEOUT_S": "2"},
    )  # fmt: skip
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2 and "cannot reach the Ray cluster at 192.0.2.1:6379 (RAY_ADDRESS)" in err
    assert time.monotonic() - started < 60 and "Traceback" not in err
