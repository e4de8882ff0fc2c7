"""Image tiers on Ray: the tiered Ray Serve endpoint against a plain one, and a Ray Data job on 2 workers vs 1.

Both at a realistic model size: torchvision ResNet-50 with random weights (timing only: the
weights change no cost), 240x320 PNG requests/images resized to 224, CPU, one torch thread per
replica/worker, on a local Ray of 2 CPUs.

1. Requests/s of aim's endpoint (every request on a tier: half keyed, half seeded, sigma 2)
   over requests/s of a plain Ray Serve deployment of the same model without aim (decode,
   the same preprocessing and forward, softmax top-1), both with @serve.batch at the same
   max_batch_size and wait, one replica of 1 CPU each, the same concurrent HTTP clients;
   interleaved rounds, medians.
2. Images/s of `--engine ray` (aim_cli.engines.ray_data.run_job) on 2 workers over 1
   worker, keyed tier, steady state: from the first result to the last (the first chunk,
   which carries the workers' start-up, is left out); whole-job times are in the detail.

Skips with a row when Ray is not installed (`pip install 'aim-cli[ray]'`). The machine's load
average is in each row's detail: on a shared 2-core machine the clients, the proxy and both
workers compete for the same cores.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import statistics
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SERVE_GOAL = 0.95
DATA_GOAL = 1.7
BATCH, WAIT_S = 8, 0.01
KEY = "benchmark key"


def _load() -> str:
    """The 1/5/15-minute load average, for the detail column."""
    return "load " + "/".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else ""


def _weights(folder: Path) -> Path:
    """Random ResNet-50 weights as a safetensors file (aim loads torchvision:ARCH only from local weights)."""
    import torch
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = folder / "resnet50.safetensors"
    save_file({k: v.contiguous() for k, v in torchvision.models.resnet50(weights=None).state_dict().items()}, path)
    return path


def _images(folder: Path, count: int) -> list[Path]:
    """count 240x320 PNGs of smooth random texture (photo-sized input, not a solid colour)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        small = rng.integers(0, 256, (15, 20, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((320, 240), Image.BILINEAR)
        path = folder / f"image_{i:04d}.png"
        image.save(path)
        paths.append(path)
    return paths


def _skip_row(reason: str) -> list[dict]:
    return [
        {
            "name": "Ray: tiered image endpoint and offline job",
            "measured": "skipped",
            "goal": "",
            "met": True,
            "detail": reason,
        }
    ]


def _plain_app(weights: Path, env: dict[str, str]):
    """The same model in a plain Ray Serve deployment without aim: decode, preprocess, forward, softmax top-1."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    @serve.deployment(name="plain")
    class Plain:
        def __init__(self, weights: str) -> None:
            import torch

            from aim_cli.models.registry import load_model

            self.model = load_model(
                "classify", "torchvision:resnet50", device=torch.device("cpu"), weights=Path(weights)
            )

        async def __call__(self, request: Request) -> JSONResponse:
            from PIL import Image

            image = Image.open(io.BytesIO(await request.body())).convert("RGB")
            return JSONResponse(await self.infer(image))

        @serve.batch(max_batch_size=BATCH, batch_wait_timeout_s=WAIT_S)
        async def infer(self, images: list) -> list[dict]:
            probabilities = self.model.logits(images).softmax(dim=1)
            best = probabilities.max(dim=1)
            return [
                {"prediction": self.model.labels[int(i)], "probability": round(float(p), 6)}
                for p, i in zip(best.values, best.indices)
            ]

    options = {"num_cpus": 1, "runtime_env": {"env_vars": env}}
    return Plain.options(ray_actor_options=options, max_ongoing_requests=2 * BATCH).bind(str(weights))


def _rate(url: str, body: bytes, queries: list[str], clients: int) -> float:
    """Requests/s for len(queries) POSTs of `body` with `clients` concurrent connections."""

    def one(query: str) -> None:
        request = urllib.request.Request(url + query, data=body, headers={"Content-Type": "image/png"})
        with urllib.request.urlopen(request, timeout=600) as response:
            json.loads(response.read())

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, queries))
    return len(queries) / (time.perf_counter() - start)


def run_serve(weights: Path, image: bytes, quick: bool) -> dict:
    """Tiered endpoint req/s over plain deployment req/s, interleaved rounds."""
    from ray import serve

    from aim_cli.engines.ray_serve import vision_app
    from aim_cli.engines.vision_tiers import EndpointSpec

    folder = weights.parent / "tiers"
    folder.mkdir()
    (folder / "keyed.yaml").write_text("version: 1\nutility: {sigma: 2.0}\nnoise: {key_env: AIM_NOISE_KEY}\n")
    (folder / "seeded.yaml").write_text("version: 1\nutility: {sigma: 2.0}\nnoise: {seed: 3}\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"OMP_NUM_THREADS": "1", "AIM_NOISE_KEY": KEY}
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    spec = EndpointSpec("classify", "torchvision:resnet50", str(weights), None, "cpu", str(folder))
    tiered = vision_app(spec, num_cpus=1, max_batch_size=BATCH, batch_wait_s=WAIT_S, env=env)
    serve.run(tiered, name="aim", route_prefix="/aim")
    serve.run(_plain_app(weights, env), name="plain", route_prefix="/plain")
    base = f"http://127.0.0.1:{port}"
    requests, clients, rounds = (32, 16, 2) if quick else (96, 16, 4)
    aim_queries = ["?aim_profile=keyed" if i % 2 else "?aim_profile=seeded" for i in range(requests)]
    _rate(base + "/plain", image, [""] * BATCH, BATCH)  # warm both: first batches pay lazy initialisation
    _rate(base + "/aim", image, aim_queries[:BATCH], BATCH)
    plain, tiered_rates = [], []
    for _ in range(rounds):
        plain.append(_rate(base + "/plain", image, [""] * requests, clients))
        tiered_rates.append(_rate(base + "/aim", image, aim_queries, clients))
    serve.shutdown()
    ratio = statistics.median(tiered_rates) / statistics.median(plain)
    return {
        "name": f"Ray Serve ResNet-50 endpoint, tiered (keyed + seeded) / plain deployment req/s, batch {BATCH}",
        "measured": round(ratio, 3),
        "goal": f">= {SERVE_GOAL}",
        "met": ratio >= SERVE_GOAL,
        "detail": f"aim {statistics.median(tiered_rates):.2f} req/s vs plain {statistics.median(plain):.2f} req/s "
        f"(rounds aim {[round(r, 2) for r in tiered_rates]}, plain {[round(r, 2) for r in plain]}); "
        f"{requests} requests x {rounds} rounds, {clients} clients, 1 replica of 1 CPU each, 240x320 PNG; {_load()}",
    }


def _job_rate(paths: list[Path], weights: Path, workers: int) -> tuple[float, float]:
    """(steady images/s after the first chunk, whole-job seconds) of a keyed --engine ray job."""
    import torch

    from aim_cli.engines.ray_data import JobSpec, run_job
    from aim_cli.models.registry import load_model
    from aim_cli.plans import plan_modulation
    from aim_cli.profile import Profile

    os.environ["AIM_NOISE_KEY"] = KEY
    labels = load_model("classify", "torchvision:resnet50", device=torch.device("cpu"), weights=weights).labels
    plan = plan_modulation(Profile(sigma=2.0, key_env="AIM_NOISE_KEY"), labels)
    spec = JobSpec("classify", "torchvision:resnet50", str(weights), None, "cpu", BATCH)
    stamps: list[float] = []
    start = time.perf_counter()
    for _ in run_job(spec, paths, plan, workers, progress=lambda _: stamps.append(time.perf_counter())):
        pass
    steady = (len(stamps) - BATCH) / (stamps[-1] - stamps[BATCH - 1])
    return steady, stamps[-1] - start


def run_data(weights: Path, paths: list[Path]) -> dict:
    """Steady images/s of a 2-worker job over a 1-worker job (same images, same chunks)."""
    one, one_total = _job_rate(paths, weights, 1)
    two, two_total = _job_rate(paths, weights, 2)
    ratio = two / one
    return {
        "name": f"Ray Data ResNet-50 job (--engine ray), 2 workers / 1 worker images/s, {len(paths)} images",
        "measured": round(ratio, 3),
        "goal": f">= {DATA_GOAL}",
        "met": ratio >= DATA_GOAL,
        "detail": f"steady {two:.2f} vs {one:.2f} images/s; whole job {two_total:.1f} s vs {one_total:.1f} s "
        f"(worker start-up included); batch {BATCH}, 1 CPU and 1 torch thread per worker; {_load()}",
    }


def run(quick: bool = False) -> list[dict]:
    """Rows: tiered/plain endpoint req/s and 2-worker/1-worker job images/s (or one skip row without Ray)."""
    try:
        import ray
        from ray import serve  # noqa: F401
    except ImportError:
        return _skip_row("Ray is not installed here (pip install 'aim-cli[ray]')")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weights = _weights(folder)
        paths = _images(folder, 48 if quick else 160)
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
        try:
            rows = [run_serve(weights, paths[0].read_bytes(), quick), run_data(weights, paths)]
        finally:
            if started_here:
                ray.shutdown()
    return rows


if __name__ == "__main__":
    for row in run(quick=bool(os.environ.get("QUICK"))):
        print(json.dumps(row))
