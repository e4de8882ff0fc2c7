"""Tiered image endpoints on Ray Serve: the deployment around aim_cli.engines.vision_tiers.

Ray Serve does the serving: HTTP, replicas, autoscaling, CPUs/GPUs per replica and dynamic
batching (@serve.batch); aim admits each request (its tier, in one line when refused) and
modulates each image of a batch by its own tier. An owner's own Ray application can mount
`AimVisionEndpoint` (or the Application from `vision_app`) beside its other deployments.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from aim_cli.certificates import answer_headers
from aim_cli.engines.vision_tiers import EndpointSpec, ImageJob, RequestError, VisionTiers
from aim_cli.limits import REQUEST_BYTES, ascii_whole

# Ray Serve's own defaults for @serve.batch are 10 and 10 ms; aim's are the CLI's defaults.
DEFAULT_BATCH = 8
DEFAULT_WAIT_S = 0.005


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, read into memory and refused (413) as soon as it passes `limit` bytes."""
    declared = ascii_whole(request.headers.get("content-length", ""))  # else the streamed size decides
    if declared is not None and declared > limit:
        raise RequestError(413, f"the request body is {declared:,} bytes, over the bound", REQUEST_BYTES.hint())
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, "the request body is over the bound", REQUEST_BYTES.hint())
        chunks.append(chunk)
    return b"".join(chunks)


@serve.deployment(name="aim-vision")
class AimVisionEndpoint:
    """One replica: a model with its tiers; POST an image (and a tier), GET the endpoint's description."""

    def __init__(self, spec: EndpointSpec, max_batch_size: int = DEFAULT_BATCH, batch_wait_s: float = DEFAULT_WAIT_S):
        self.tiers = VisionTiers(spec)
        self.limit = REQUEST_BYTES.value()
        self.infer.set_max_batch_size(max_batch_size)
        self.infer.set_batch_wait_timeout_s(batch_wait_s)

    async def __call__(self, request: Request) -> JSONResponse:
        """Admit one HTTP request (4xx and one line when refused) and answer it from its batch."""
        if request.method == "GET":
            return JSONResponse(self.tiers.info())
        if request.method != "POST":
            return JSONResponse({"error": f"method {request.method} is not served (POST an image)"}, status_code=405)
        try:
            body = await read_body(request, self.limit)
            job = self.tiers.admit(request.headers.get("content-type", ""), body, request.query_params)
        except RequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        status, answer = await self.infer(job)
        return JSONResponse(answer, status_code=status, headers=answer_headers(answer) if status == 200 else None)

    @serve.batch(max_batch_size=DEFAULT_BATCH, batch_wait_timeout_s=DEFAULT_WAIT_S)
    async def infer(self, jobs: list[ImageJob]) -> list[tuple[int, dict[str, Any]]]:
        """A batch of admitted requests, as Ray Serve gathered them: one forward pass, each its own tier."""
        return self.tiers.answer(jobs)


def vision_app(
    spec: EndpointSpec,
    *,
    replicas: int = 1,
    max_replicas: int | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_batch_size: int = DEFAULT_BATCH,
    batch_wait_s: float = DEFAULT_WAIT_S,
    env: Mapping[str, str] | None = None,
) -> Any:
    """The Ray Serve Application of a tiered endpoint; `max_replicas` > `replicas` turns on Ray's autoscaling.

    `env` reaches every replica (runtime_env): the keyed tiers' secrets on a cluster.
    """
    actor: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus}
    if env:
        actor["runtime_env"] = {"env_vars": dict(env)}
    options: dict[str, Any] = {"ray_actor_options": actor, "max_ongoing_requests": max(2 * max_batch_size, 8)}
    if max_replicas is not None and max_replicas > replicas:
        options["autoscaling_config"] = {"min_replicas": replicas, "max_replicas": max_replicas}
        options["num_replicas"] = "auto"
    else:
        options["num_replicas"] = replicas
    deployment: Any = AimVisionEndpoint  # serve.deployment's class: its type has .options, which mypy cannot see
    return deployment.options(**options).bind(spec, max_batch_size, batch_wait_s)


def start(
    app: Any,
    *,
    address: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    route_prefix: str = "/",
    instance: str = "",
) -> None:
    """Connect to Ray (local by default), start Serve's HTTP proxy on host:port and deploy `app` (returns once up).

    A port in use is refused before Ray starts; with `instance` (the spec's token), the port must
    then answer as this deployment, so two servers started at once never both report ready.
    """
    from aim_cli.engines.ray_data import connect
    from aim_cli.ports import check_port_free

    check_port_free(host, port)
    connect(address)
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name="aim-vision", route_prefix=route_prefix)
    if instance:
        try:
            confirm_listening(host, port, route_prefix, instance)
        except BaseException:
            import ray

            serve.shutdown()
            ray.shutdown()
            raise


def confirm_listening(host: str, port: int, route_prefix: str, instance: str, wait_s: float = 30.0) -> None:
    """Wait (bounded) until GET host:port/prefix answers with this deployment's token; else one line, exit 2."""
    import json
    import urllib.error
    import urllib.request

    from aim_cli.errors import AimError

    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    url = f"http://{shown}:{port}{route_prefix}"
    deadline = time.monotonic() + wait_s
    answered = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                document = json.loads(reply.read(1 << 20))
            if isinstance(document, dict) and document.get("instance") == instance:
                return
            answered = "another server answered"
            break
        except (OSError, ValueError) as exc:
            answered = str(getattr(exc, "reason", exc))[:100]
        time.sleep(0.5)
    raise AimError(
        f"port {port} on {host} does not reach this server ({answered})",
        "stop the other server, or choose another --port",
    )


def serve_until_interrupted() -> None:
    """Block while Ray Serve serves; Ctrl-C or SIGTERM shuts Serve and Ray down, then re-raises (the CLI reports it)."""
    import ray

    try:
        while True:
            time.sleep(1)
    finally:
        serve.shutdown()
        ray.shutdown()


__all__ = ["AimVisionEndpoint", "confirm_listening", "read_body", "serve_until_interrupted", "start", "vision_app"]
