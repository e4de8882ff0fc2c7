"""The tiered image endpoint's engine-neutral core and the Ray options of the CLI, without Ray installed.

The HTTP endpoint and the Ray Data jobs themselves are in test_ray_serve.py / test_ray_data.py
(they need the ray extra); everything here runs in the plain venv.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aim_cli.engines.vision_tiers import (
    EndpointSpec,
    RequestError,
    VisionTiers,
    parse_request,
    per_item_plan,
)
from tests.conftest import REPO, assert_user_error

DEMO = REPO / "aim_cli" / "demo"
CLASSIFY_SAMPLES = sorted((DEMO / "samples" / "classify").glob("*.png"))
SEGMENT_SAMPLES = sorted((DEMO / "samples" / "segment").glob("*.png"))
KEY = "tier-test-secret"


def write_tiers(folder: Path) -> Path:
    """free: keyed sigma 3; gold: seeded sigma 0.5; focus: a tier that fixes its focus."""
    folder.mkdir()
    (folder / "free.yaml").write_text("version: 1\nutility: {sigma: 3.0}\nnoise: {key_env: AIM_NOISE_KEY}\n")
    (folder / "gold.yaml").write_text("version: 1\nutility: {sigma: 0.5}\nnoise: {seed: 7}\n")
    return folder


def bomb_png(width: int = 40000, height: int = 40000) -> bytes:
    """A PNG header declaring width x height pixels around almost no data: PIL refuses it at open."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def multipart(image: bytes, fields: dict[str, str]) -> tuple[str, bytes]:
    """A multipart/form-data body with the image part and text fields."""
    boundary = "aim-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + image
        + b"\r\n"
    ]
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(parts) + f"--{boundary}--\r\n".encode()


@pytest.fixture(scope="module")
def tiers_dir(tmp_path_factory) -> Path:
    return write_tiers(tmp_path_factory.mktemp("tiers") / "tiers")


@pytest.fixture(scope="module")
def classifier(tiers_dir) -> VisionTiers:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIM_NOISE_KEY", KEY)
        return VisionTiers(EndpointSpec("classify", str(DEMO / "classifier"), profiles=str(tiers_dir), device="cpu"))


def test_the_three_request_forms_carry_the_same_image_and_fields():
    image = CLASSIFY_SAMPLES[0].read_bytes()
    raw = parse_request("image/png", image, {"aim_profile": "gold", "topk": "2"})
    body = json.dumps({"image": base64.b64encode(image).decode(), "aim_profile": "gold", "topk": 2}).encode()
    as_json = parse_request("application/json", body, {})
    as_form = parse_request(*multipart(image, {"aim_profile": "gold", "topk": "2"}), {})
    assert raw == as_json == as_form == (image, {"aim_profile": "gold", "topk": 2})


@pytest.mark.parametrize(
    ("content_type", "body", "status", "fragment"),
    [
        ("application/json", b"{not json", 400, "not valid JSON"),
        ("application/json", b"[1]", 400, "must be an object"),
        ("application/json", b'{"image": "%%%"}', 400, "not valid base64"),
        ("application/json", b'{"aim_profile": "gold"}', 400, "base64 text in 'image'"),
        ("text/plain", b"hello", 415, "unsupported content type"),
        ("image/png", b"", 400, "carries no image"),
    ],
)
def test_malformed_requests_are_one_line_4xx(content_type, body, status, fragment):
    with pytest.raises(RequestError, match=fragment) as caught:
        parse_request(content_type, body, {})
    assert caught.value.status == status and "\n" not in str(caught.value)


def test_admission_uses_the_serving_core_and_refuses_in_one_line(classifier, monkeypatch):
    monkeypatch.setenv("AIM_NOISE_KEY", KEY)
    image = CLASSIFY_SAMPLES[0].read_bytes()
    cases = [
        ({"aim_profile": "free", "aim_sigma": "0"}, 400, "tier 'free' fixes its own sigma"),
        ({"aim_profile": "gold", "aim_seed": "3"}, 400, "tier 'gold' fixes its own noise"),
        ({"aim_profile": "platinum"}, 400, "unknown tier 'platinum'"),
        ({"aim_profile": "gold", "size": "9"}, 400, "unknown request field 'size'"),
        ({"aim_profile": "gold", "topk": "0"}, 400, "topk: expected an integer >= 1"),
        ({"aim_profile": "gold", "mask_format": "jpeg"}, 400, "mask_format: expected png or ids"),
        ({"aim_sigma": "-1"}, 400, "aim_sigma"),
    ]
    for query, status, fragment in cases:
        with pytest.raises(RequestError, match=fragment) as caught:
            classifier.admit("image/png", image, query)
        assert caught.value.status == status and "\n" not in str(caught.value)
    for data, status, fragment in [(b"not an image at all", 400, "not an image"), (bomb_png(), 413, "pixels")]:
        with pytest.raises(RequestError, match=fragment) as caught:
            classifier.admit("image/png", data, {"aim_profile": "gold"})
        assert caught.value.status == status


def test_keyed_tier_answers_like_aim_classify_whatever_the_batch(classifier, tiers_dir, tmp_path, monkeypatch):
    """The endpoint core and `aim classify --profile` with the same key: the same top-k for every image."""
    monkeypatch.setenv("AIM_NOISE_KEY", KEY)
    out = tmp_path / "cli.jsonl"
    from aim_cli.cli import main

    with pytest.raises(SystemExit) as done:
        main(
            [
                "classify",
                *map(str, CLASSIFY_SAMPLES),
                "--profile",
                str(tiers_dir / "free.yaml"),
                "-k",
                "3",
                "-o",
                str(out),
                "-q",
            ]
        )
    assert done.value.code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    jobs = [
        classifier.admit("image/png", path.read_bytes(), {"aim_profile": "free", "topk": 3})
        for path in CLASSIFY_SAMPLES
    ]
    together = classifier.answer(jobs)  # one batch, as the CLI ran them: the same answers, to the last digit
    alone = [classifier.answer([job])[0] for job in jobs]
    changed = 0
    for (status, answer), (_, single), record in zip(together, alone, records):
        assert status == 200 and answer["tier"] == "free"
        assert answer["prediction"] == record["prediction"] and answer["probability"] == record["probability"]
        assert [(p["label"], p["probability"]) for p in answer["topk"]] == [
            (p["label"], p["probability"]) for p in record["topk"]
        ]
        # Alone in its batch: the same noise and decision; the model's own float32 forward may
        # differ in the last bits with the batch size (BLAS blocking), never by more than that.
        assert [p["class_id"] for p in single["topk"]] == [p["class_id"] for p in answer["topk"]]
        assert np.allclose(
            [p["probability"] for p in single["topk"]], [p["probability"] for p in answer["topk"]], atol=1e-5
        )
        changed += answer["prediction"] != Path(record["path"]).stem.rsplit("_", 1)[0]
    assert changed > 0  # sigma 3 moves some predictions: the noise was applied


def test_seeded_and_fresh_requests_draw_per_image_noise(classifier):
    """Seeded tiers are keyed on (seed, pixels): the same image gets the same noise in any batch; fresh seeds differ."""
    images = [p.read_bytes() for p in CLASSIFY_SAMPLES[:4]]
    gold = [classifier.admit("image/png", data, {"aim_profile": "gold", "topk": 10}) for data in images]
    forward, backward = classifier.answer(gold), classifier.answer(gold[::-1])[::-1]
    for (_, one), (_, other) in zip(forward, backward):
        assert [p["class_id"] for p in one["topk"]] == [p["class_id"] for p in other["topk"]]
        assert np.allclose(
            [p["probability"] for p in one["topk"]], [p["probability"] for p in other["topk"]], atol=1e-5
        )
    from aim_cli.tier_policy import TierPolicy

    # Ad-hoc requests draw a fresh seed each: the operator's opt-in (--allow-ad-hoc-tiers).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(classifier, "policy", TierPolicy(classifier.tiers, allow_ad_hoc=True))
        fresh = [classifier.admit("image/png", images[0], {"aim_sigma": 3, "topk": 10}) for _ in range(2)]
    first, second = classifier.answer(fresh)
    assert first[1]["topk"] != second[1]["topk"]  # each fresh request draws its own seed
    assert per_item_plan(gold[0].plan) is gold[0].plan and gold[0].plan.keyed


def test_clean_and_default_tier(tiers_dir, monkeypatch):
    monkeypatch.setenv("AIM_NOISE_KEY", KEY)
    spec = EndpointSpec(
        "classify", str(DEMO / "classifier"), profiles=str(tiers_dir), default_profile="gold", device="cpu"
    )
    tiers = VisionTiers(spec)
    job = tiers.admit("image/png", CLASSIFY_SAMPLES[0].read_bytes(), {})
    assert job.tier == "gold" and job.plan.modulation.sigma == 0.5
    assert tiers.info()["default_tier"] == "gold" and tiers.info()["classes"] == 10
    bare = VisionTiers(EndpointSpec("classify", str(DEMO / "classifier"), device="cpu"))
    clean = bare.admit("image/png", CLASSIFY_SAMPLES[0].read_bytes(), {})
    assert clean.tier is None and clean.plan.modulation.is_identity


def test_segment_answers_match_aim_segment_masks_and_shares(tiers_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("AIM_NOISE_KEY", KEY)
    from aim_cli.cli import main

    with pytest.raises(SystemExit) as done:
        main(
            [
                "segment",
                *map(str, SEGMENT_SAMPLES),
                "--profile",
                str(tiers_dir / "free.yaml"),
                "-o",
                str(tmp_path / "out"),
                "-q",
            ]
        )
    assert done.value.code == 0
    records = {
        Path(r["image"]).name: r for r in map(json.loads, (tmp_path / "out" / "summary.jsonl").read_text().splitlines())
    }
    segmenter = VisionTiers(EndpointSpec("segment", str(DEMO / "segmenter"), profiles=str(tiers_dir), device="cpu"))
    for path in SEGMENT_SAMPLES:
        png = segmenter.admit("image/png", path.read_bytes(), {"aim_profile": "free"})
        ids = segmenter.admit("image/png", path.read_bytes(), {"aim_profile": "free", "mask_format": "ids"})
        (status, answer), (_, as_ids) = segmenter.answer([png, ids])
        assert status == 200
        record = records[path.name]
        written = np.asarray(Image.open(tmp_path / "out" / record["mask"]))
        served = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask_png"]))))
        assert np.array_equal(served, written) and np.array_equal(np.asarray(as_ids["class_ids"]), written)
        assert answer["fractions"] == record["fractions"]
        assert (answer["width"], answer["height"]) == (record["width"], record["height"])


def test_serve_picks_ray_serve_for_image_models_and_keeps_vllm_for_the_rest(aim, tiers_dir):
    from aim_cli.api.serve import model_task

    assert model_task(str(DEMO / "classifier")) == "classify"
    assert model_task(str(DEMO / "segmenter")) == "segment"
    assert model_task(str(DEMO / "lm")) == "generate" and model_task("my/model") == "generate"
    assert model_task("timm:resnet18") == "classify"
    assert model_task("torchvision:deeplabv3_resnet50") == "segment"
    assert model_task("torchvision:resnet50") == "classify"
    env = {"AIM_NOISE_KEY": KEY}
    dry = aim(
        "serve",
        str(DEMO / "segmenter"),
        "-p",
        str(tiers_dir),
        "--replicas",
        "2",
        "--max-replicas",
        "3",
        "--dry-run",
        env=env,
    )
    assert dry.returncode == 0, dry.stderr
    settings = json.loads(dry.stdout)
    assert settings["endpoint"]["task"] == "segment" and settings["ray"]["max_replicas"] == 3
    assert "gold: sigma 0.5, seed 7" in dry.stderr and "aim_profile=free" in dry.stderr
    vllm_only = aim("serve", "my/model", "-p", str(tiers_dir), "--replicas", "2", "--dry-run", env=env)
    assert_user_error(vllm_only, 2, "--replicas is for image models on Ray Serve")
    no_key = aim("serve", str(DEMO / "classifier"), "-p", str(tiers_dir), "--dry-run")
    assert_user_error(no_key, 2, "tier 'free': keyed noise needs the environment variable AIM_NOISE_KEY")


def test_engine_options_are_checked_before_any_work(aim):
    result = aim("classify", "--workers", "2")
    assert_user_error(result, 2, "--workers goes with --engine ray")
    if importlib.util.find_spec("ray") is None:
        missing = aim("segment", "--engine", "ray")
        assert_user_error(missing, 2, "needs Ray", "pip install 'aim-cli[ray]'")
        assert len(missing.stderr.strip().splitlines()) == 1


def test_per_item_plans_travel_to_workers_by_pickle():
    """Ray ships a worker's plan pickled: a keyed plan (and a seeded one, made per-item) draws the same noise after."""
    import pickle

    import torch

    import aim_cli as aim

    logits = torch.zeros(3, 10)
    keys = [b"a", b"b", b"c"]
    for profile in (
        {"utility": {"sigma": 2.0}, "noise": {"key_env": "AIM_TEST_RAY_KEY"}},
        {"utility": {"sigma": 2.0}, "noise": {"seed": 5}},
    ):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AIM_TEST_RAY_KEY", KEY)
            plan = per_item_plan(aim.plan(profile, num_classes=10))
        copy = pickle.loads(pickle.dumps(plan))
        assert torch.equal(copy.apply(logits, 1, keys), plan.apply(logits, 1, keys))
        assert not torch.equal(plan.apply(logits, 1, keys)[0], plan.apply(logits, 1, keys)[1])
