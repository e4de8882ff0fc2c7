"""The tiered image endpoints on a real Ray Serve (local Ray, 2 CPUs) over HTTP.

Mixed-tier concurrent requests batched by @serve.batch, keyed answers equal across batches and
to the CLI, and every 4xx case. Needs the ray extra (`make test-ray`); skipped cleanly without it.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import random
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_ray_tiers import CLASSIFY_SAMPLES, DEMO, KEY, SEGMENT_SAMPLES, bomb_png, multipart, write_tiers

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
REQUEST_LIMIT = 300_000  # AIM_MAX_REQUEST_BYTES of the test replicas


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def tiers(tmp_path_factory) -> Path:
    return write_tiers(tmp_path_factory.mktemp("tiers") / "tiers")


@pytest.fixture(scope="module")
def url(tiers):
    """A classifier at /classify and a segmenter at /segment, on a local Ray of 2 CPUs; shut down after."""
    from aim_cli.engines.ray_serve import start, vision_app
    from aim_cli.engines.vision_tiers import EndpointSpec

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    port = free_port()
    env = {"AIM_NOISE_KEY": KEY, "AIM_MAX_REQUEST_BYTES": str(REQUEST_LIMIT)}
    common = {"num_cpus": 0.5, "env": env, "max_batch_size": 8, "batch_wait_s": 0.05}
    # The mixed-tier test sends requests without a tier too: the clean model, by the operator's opt-in.
    classify = EndpointSpec("classify", str(DEMO / "classifier"), profiles=str(tiers), device="cpu", allow_clean=True)
    try:
        start(vision_app(classify, **common), host="127.0.0.1", port=port, route_prefix="/classify")
        import aim_cli as aim  # the API's Application, as an owner's own Ray app would mount it

        segment = aim.vision_app("segment", str(DEMO / "segmenter"), profiles=str(tiers), device="cpu", **common)
        serve.run(segment, name="segment", route_prefix="/segment")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def post(address: str, data: bytes, content_type: str = "image/png", query: str = "") -> tuple[int, dict]:
    """POST a body; (status, JSON answer) for successes and refusals alike."""
    request = urllib.request.Request(address + query, data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def cli_records(tmp_path: Path, monkeypatch, *args: str) -> None:
    """Run `aim ARGS` in this process with the tiers' key; it must succeed."""
    from aim_cli.cli import main

    monkeypatch.setenv("AIM_NOISE_KEY", KEY)
    with pytest.raises(SystemExit) as done:
        main([*args, "--device", "cpu", "--quiet"])
    assert done.value.code == 0


def test_mixed_tier_concurrent_requests(url, tiers, tmp_path, monkeypatch):
    """Keyed, seeded and clean requests at once: each answered at its tier; keyed ones as `aim classify` answers."""
    out = tmp_path / "cli.jsonl"
    cli_records(
        tmp_path,
        monkeypatch,
        "classify",
        *map(str, CLASSIFY_SAMPLES),
        "-p",
        str(tiers / "free.yaml"),
        "-k",
        "3",
        "-o",
        str(out),
    )
    expected = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    work = [(path, tier) for path in CLASSIFY_SAMPLES for tier in ("free", "free", "gold", None)]
    random.Random(0).shuffle(work)  # repeats land in different batches, beside other tiers

    def ask(item: tuple[Path, str | None]) -> tuple[Path, str | None, int, dict]:
        path, tier = item
        query = f"?topk=3&aim_profile={tier}" if tier else "?topk=3"
        return (path, tier, *post(url + "/classify", path.read_bytes(), query=query))

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, work))
    assert all(status == 200 for _, _, status, _ in answers), [a for a in answers if a[2] != 200][:1]
    seen: dict[tuple[str, str | None], list[dict]] = {}
    for path, tier, _, answer in answers:
        assert answer["tier"] == tier
        seen.setdefault((path.name, tier), []).append(answer)
    changed = 0
    for name, record in expected.items():
        first, again = seen[(name, "free")]
        for answer in (first, again):  # in whatever batch it was served: the CLI's classes and probabilities
            assert [p["label"] for p in answer["topk"]] == [p["label"] for p in record["topk"]]
            # The noise is identical; the model's float32 forward can differ in its last bits with the batch size.
            assert [p["probability"] for p in answer["topk"]] == pytest.approx(
                [p["probability"] for p in record["topk"]], abs=1e-5
            )
        clean = seen[(name, None)][0]
        changed += clean["topk"] != first["topk"]
    assert changed == len(expected)  # sigma 3 changes every image's probabilities: the tiers were applied


def test_every_bad_request_is_a_one_line_4xx(url):
    image = CLASSIFY_SAMPLES[0].read_bytes()
    big = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, format="PNG")  # noise does not compress: over REQUEST_LIMIT bytes
    assert len(buffer.getvalue()) > REQUEST_LIMIT
    cases = [
        (b"this is not an image", "image/png", "?aim_profile=gold", 400, "not an image"),
        (bomb_png(), "image/png", "?aim_profile=gold", 413, "pixels"),
        (buffer.getvalue(), "image/png", "?aim_profile=gold", 413, "over the bound"),
        (image, "image/png", "?aim_profile=diamond", 400, "unknown tier 'diamond'"),
        (image, "image/png", "?aim_profile=free&aim_sigma=0", 400, "tier 'free' fixes its own sigma"),
        (image, "image/png", "?aim_profile=gold&aim_keyed=false", 400, "tier 'gold' fixes its own noise"),
        (b"{", "application/json", "", 400, "not valid JSON"),
        (image, "text/plain", "", 415, "unsupported content type"),
    ]
    for body, content_type, query, status, fragment in cases:
        code, answer = post(url + "/classify", body, content_type, query)
        assert (code, fragment in answer["error"]) == (status, True), (fragment, code, answer)
        assert set(answer) == {"error"} and "\n" not in answer["error"] and "Traceback" not in answer["error"]


def test_raw_multipart_and_json_requests_get_the_same_answer(url):
    image = CLASSIFY_SAMPLES[3].read_bytes()
    raw = post(url + "/classify", image, query="?aim_profile=gold&topk=4")
    form = post(url + "/classify", *reversed(multipart(image, {"aim_profile": "gold", "topk": "4"})))
    body = json.dumps({"image": base64.b64encode(image).decode(), "aim_profile": "gold", "topk": 4}).encode()
    as_json = post(url + "/classify", body, "application/json")
    assert raw[0] == 200 and raw == form == as_json
    with urllib.request.urlopen(url + "/classify", timeout=300) as response:
        info = json.loads(response.read())
    assert info["task"] == "classify" and info["default_tier"] is None and len(info["tiers"]) == 2


def test_segment_endpoint_serves_the_masks_aim_segment_writes(url, tiers, tmp_path, monkeypatch):
    out = tmp_path / "masks"
    cli_records(
        tmp_path, monkeypatch, "segment", *map(str, SEGMENT_SAMPLES), "-p", str(tiers / "free.yaml"), "-o", str(out)
    )
    records = {Path(r["image"]).name: r for r in map(json.loads, (out / "summary.jsonl").read_text().splitlines())}
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(lambda p: post(url + "/segment", p.read_bytes(), query="?aim_profile=free"), SEGMENT_SAMPLES)
        )
    for path, (status, answer) in zip(SEGMENT_SAMPLES, answers):
        assert status == 200
        record = records[path.name]
        served = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask_png"]))))
        assert np.array_equal(served, np.asarray(Image.open(out / record["mask"])))
        assert answer["fractions"] == record["fractions"]
    status, ids = post(url + "/segment", SEGMENT_SAMPLES[0].read_bytes(), query="?aim_profile=free&mask_format=ids")
    assert status == 200 and np.array_equal(
        np.asarray(ids["class_ids"]), np.asarray(Image.open(out / records[SEGMENT_SAMPLES[0].name]["mask"]))
    )
