"""The Ray endpoint names each answer's tier and certificate (JSON field and response headers).

Needs the ray extra (`make test-ray`); skipped cleanly without it. The start-up check itself is
tested without extras in test_verify_cli.py.
"""

from __future__ import annotations

import logging
import urllib.request

import pytest

from aim_cli.profile import Profile
from tests.test_ray_serve import free_port
from tests.test_ray_tiers import CLASSIFY_SAMPLES, DEMO

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A certified tier (calibrated here, on the demo classifier) and a plain one, on a local Ray."""
    from aim_cli.engines.ray_serve import start, vision_app
    from aim_cli.engines.vision_tiers import EndpointSpec
    from tests.conftest import run_aim

    folder = tmp_path_factory.mktemp("certified-tiers")
    made = run_aim("calibrate", "--target-acc", "0.6", "--limit", "200", "--write-profile", str(folder / "gold.yaml"))
    assert made.returncode == 0, made.stderr
    (folder / "plain.yaml").write_text("version: 1\nutility: {sigma: 1.0}\nnoise: {seed: 3}\n")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    port = free_port()
    spec = EndpointSpec("classify", str(DEMO / "classifier"), profiles=str(folder), device="cpu")
    try:
        start(vision_app(spec, num_cpus=0.5), host="127.0.0.1", port=port, route_prefix="/")
        yield f"http://127.0.0.1:{port}", folder
    finally:
        serve.shutdown()
        ray.shutdown()


def test_answers_carry_tier_and_certificate_headers(served) -> None:
    """A certified tier's answer names its certificate id in the JSON and the X-Aim-Certificate header."""
    import json

    address, folder = served
    certificate = Profile.load(folder / "gold.yaml").certificate
    assert certificate is not None
    for tier, expected in (("gold", certificate.id), ("plain", None)):
        request = urllib.request.Request(
            f"{address}/?aim_profile={tier}",
            data=CLASSIFY_SAMPLES[0].read_bytes(),
            headers={"Content-Type": "image/png"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
            assert response.headers["X-Aim-Tier"] == tier
            assert response.headers["X-Aim-Certificate"] == (expected or "none")
        assert answer["tier"] == tier and answer["certificate"] == expected
