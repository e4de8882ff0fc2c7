"""Tiered image classification and segmentation for servers: request bytes -> admitted tier -> answer.

Engine-neutral (this module never imports Ray): aim_cli.engines.ray_serve only wraps it in
a Ray Serve deployment, so everything here is tested without Ray. Admission is the vLLM path's
(aim_cli.tier_policy.resolve): a request gets a tier of the folder with the options it leaves
open, requests naming none get the default tier, and ad-hoc modulation or the clean model only
where the operator opted in. A field given twice (query, body, form) with two values is refused.
Answers come from the same task code as `aim classify` / `aim segment`, and keyed tiers are
keyed on the decoded pixels, so an endpoint and the CLI with the same key and profile give the same answer.

Every item's noise depends only on its tier and its pixels: seeded tiers (and requests with
aim_seed, and fresh-seed requests with the seed drawn at admission) draw from the counter-based
generator keyed on (seed, pixels), never on the other requests of a batch.

Nothing a client sends reaches the file system: bodies are read into memory under a bound,
multipart bodies are parsed in memory, and images are decoded from bytes: only the formats of
SERVE_FORMATS, with the pixel count checked from the header before any pixel is decoded, and an
answer's size checked before it is built.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aim_cli.errors import AimError, InputError, ProfileError
from aim_cli.limits import IMAGE_BYTES, SERVE_ANSWER_BYTES, SERVE_PIXELS
from aim_cli.tier_policy import TierPolicy, resolve

TASKS = ("classify", "segment")
MASK_FORMATS = ("png", "ids")
# Answer options a request may set beside its aim_* arguments.
ANSWER_FIELDS = ("topk", "mask_format")
# How a request's image is named in messages: never a path (nothing a client sends is a path).
REQUEST_NAME = Path("request image")
# Image formats a server decodes: Pillow's others include EPS (Ghostscript runs on it) and rarer
# formats with their own parsers; none is needed for photographs.
SERVE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM")
# Where a request's field came from, for the message when it comes twice.
QUERY, JSON_BODY, FORM = "the query string", "the JSON body", "the form"


class RequestError(AimError):
    """A request the endpoint refuses: an HTTP status (4xx) and aim's one-line message."""

    def __init__(self, status: int, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.status = status


@dataclass(frozen=True)
class EndpointSpec:
    """What a replica loads: the model, its task, the tiers directory and the default tier (plain values)."""

    task: str
    model: str | None = None
    weights: str | None = None
    labels: str | None = None
    device: str = "auto"
    profiles: str | None = None
    default_profile: str | None = None
    # The operator's opt-ins (tier_policy.TierPolicy): ad-hoc modulation and the clean model.
    allow_ad_hoc: bool = False
    allow_clean: bool = False
    # A token GET / answers, so the starter knows its port reaches this server and not another one.
    instance: str = ""


@dataclass(frozen=True)
class ImageJob:
    """One admitted request: its decoded image, pixel key, resolved plan, tier and answer options."""

    image: Image.Image
    key: bytes
    plan: Any  # ModulationPlan (torch-backed, imported lazily)
    tier: str | None
    topk: int = 1
    mask_format: str = "png"


def per_item_plan(plan: Any) -> Any:
    """A plan whose noise depends only on the item: keyed plans as they are; a seeded one keyed on (seed, pixels).

    The one rule of every engine that batches items as they come (Ray Serve replicas, Ray Data
    workers): seed=None marks the plan keyed, so the tasks pass each image's pixel key.
    """
    if plan.keyed:
        return plan
    from aim_cli.modulation import seed_keyed_noise

    return replace(plan, noise=seed_keyed_noise(int(plan.seed or 0)), seed=None)


def _scalar(text: Any) -> Any:
    """A query-string or form value as JSON when it parses (0.5, true, 3), else the text itself."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


class _Fields:
    """A request's fields from several places; the same field in two places with two values is refused."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.where: dict[str, str] = {}

    def add(self, name: str, value: Any, where: str) -> None:
        """Record one field; a second value for it (from anywhere) is a 400 naming both places."""
        if name in self.values:
            if _canonical(self.values[name]) != _canonical(value):
                places = where if self.where[name] == where else f"{self.where[name]} and {where}"
                raise RequestError(
                    400, f"{name[:40]!r} is given twice ({places}) with different values", "give each field once"
                )
            return
        self.values[name] = value
        self.where[name] = where


def _canonical(value: Any) -> str:
    """A field's value as comparable text: 1 and true, or 1 and "1", are different values."""
    return json.dumps(value, sort_keys=True, default=repr)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object_pairs_hook: an object with one key twice (two values) is refused, not last-wins."""
    fields = _Fields()
    for name, value in pairs:
        fields.add(name, value, JSON_BODY)
    return fields.values


def _query_items(query: Any) -> list[tuple[str, str]]:
    """Every (name, value) of a query string, repeats included (Starlette's QueryParams, a mapping or pairs)."""
    if hasattr(query, "multi_items"):
        return [(str(k), v) for k, v in query.multi_items()]
    if isinstance(query, Mapping):
        return [(str(k), v) for k, v in query.items()]
    return [(str(k), v) for k, v in query]


def _multipart(content_type: str, body: bytes, fields: _Fields) -> bytes | None:
    """The 'image' part of a multipart/form-data body, parsed in memory; the other parts go into `fields`."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise RequestError(400, "the multipart body has no parts", "send the image in a part named 'image'")
    image: bytes | None = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        payload = payload if isinstance(payload, bytes) else b""  # a nested multipart part carries no bytes
        if name == "image":
            if image is not None:
                raise RequestError(400, "the form carries two parts named 'image'", "send one image per request")
            image = payload
        elif name:
            fields.add(str(name), _scalar(payload.decode("utf-8", "replace")), FORM)
    return image


def parse_request(content_type: str, body: bytes, query: Any) -> tuple[bytes, dict[str, Any]]:
    """The image bytes and the request's fields, from raw image bytes, multipart/form-data or JSON with base64.

    `query`: the query string's parameters (Starlette's QueryParams keeps repeats; a mapping or
    (name, value) pairs do too). A field given twice with different values is a 400.
    """
    kind = content_type.split(";", 1)[0].strip().lower()
    fields = _Fields()
    for name, value in _query_items(query):
        fields.add(name, _scalar(value), QUERY)
    data: bytes | None
    if kind == "application/json":
        try:
            document = json.loads(body, object_pairs_hook=_no_duplicate_keys)
        except RequestError:
            raise
        except (ValueError, RecursionError):
            raise RequestError(400, "the body is not valid JSON", 'send {"image": "<base64>", ...}') from None
        if not isinstance(document, dict):
            raise RequestError(400, "the JSON body must be an object", 'send {"image": "<base64>", ...}')
        encoded = document.pop("image", None)
        if not isinstance(encoded, str):
            raise RequestError(400, "a JSON request carries its image as base64 text in 'image'")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, "'image' is not valid base64", "encode the image file's bytes as base64") from None
        for name, value in document.items():
            fields.add(str(name), value, JSON_BODY)
    elif kind == "multipart/form-data":
        data = _multipart(content_type, body, fields)
    elif kind.startswith("image/") or kind in ("application/octet-stream", ""):
        data = body
    else:
        raise RequestError(
            415, f"unsupported content type {kind[:60]!r}", "send image bytes, multipart/form-data or application/json"
        )
    if not data:
        raise RequestError(400, "the request carries no image", "send the image bytes (or 'image' in JSON / multipart)")
    return data, fields.values


def decode_request_image(data: bytes, check: Callable[[int, int], None] | None = None) -> Image.Image:
    """Decode a request's image bytes to RGB under the server's bounds; 413 past a bound, 400 when not an image.

    `check(width, height)` runs on the header's size before any pixel is decoded (the answer's bound).
    """
    from aim_cli.images import decode_image

    if len(data) > IMAGE_BYTES.value():
        raise RequestError(413, f"the image is {len(data):,} bytes, over the bound", IMAGE_BYTES.hint())
    try:
        # The header only: the format and the size before any pixel is decoded.
        with Image.open(io.BytesIO(data), formats=SERVE_FORMATS) as probe:
            width, height = probe.size
    except Image.DecompressionBombError:
        raise RequestError(413, "the image declares more pixels than the server decodes", SERVE_PIXELS.hint()) from None
    except Exception:
        raise RequestError(
            400, "the request body is not an image (or it is corrupt)", f"send one of {', '.join(SERVE_FORMATS)}"
        ) from None
    if width * height > SERVE_PIXELS.value():
        raise RequestError(
            413, f"the image declares {width}x{height} pixels, more than the server decodes", SERVE_PIXELS.hint()
        )
    if check is not None:
        check(width, height)
    try:
        return decode_image(data, REQUEST_NAME, SERVE_FORMATS)
    except InputError as exc:
        raise RequestError(400, exc.message, exc.hint) from None


def _topk(value: Any) -> int:
    """The topk answer option: an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(400, f"topk: expected an integer >= 1, got {str(value)[:40]!r}")
    return value


class VisionTiers:
    """One replica's model, tiers and plans: admits requests and answers batches of them."""

    def __init__(self, spec: EndpointSpec) -> None:
        from aim_cli import serving
        from aim_cli.devices import resolve_device

        if spec.task not in TASKS:
            raise AimError(f"unknown image task {spec.task!r}", f"choose one of {', '.join(TASKS)}")
        self.spec = spec
        self.tiers = serving.load_profile_dir(spec.profiles) if spec.profiles else {}
        environ = {serving.DEFAULT_ENV: spec.default_profile or ""}
        self.default = serving.default_tier(self.tiers, environ)
        # Without a tiers folder there is nothing to protect (an owner's own app); with one, the server's policy.
        self.policy = (
            TierPolicy(self.tiers, self.default, spec.allow_ad_hoc, spec.allow_clean)
            if spec.profiles
            else TierPolicy.open()
        )
        device = resolve_device(spec.device)
        weights = Path(spec.weights) if spec.weights else None
        labels = Path(spec.labels) if spec.labels else None
        if spec.task == "classify":
            from aim_cli.models.registry import load_model

            self.model: Any = load_model("classify", spec.model, device=device, weights=weights, labels=labels)
        else:
            from aim_cli.masks import colour_table
            from aim_cli.models.registry import load_model

            self.model = load_model("segment", spec.model, device=device, weights=weights, labels=labels)
            self.colours = colour_table(self.model.labels)
        self._plans: dict[Any, Any] = {}

    def info(self) -> dict[str, Any]:
        """What a GET on the endpoint answers: task, model, classes, tiers and the default tier."""
        from aim_cli.serving import profile_summary

        return {
            "task": self.spec.task,
            "model": self.model.name,
            "classes": len(self.model.labels),
            "tiers": profile_summary(self.tiers),
            "default_tier": self.default,
            "serves": self.policy.guarantees(),
            "instance": self.spec.instance,
        }

    def plan(self, profile: Any) -> Any:
        """The per-item plan of a validated profile (None: the clean model), cached unless its seed is fresh."""
        from aim_cli.plans import plan_modulation
        from aim_cli.profile import Profile

        profile = profile if profile is not None else Profile()
        fresh = profile.seed is None and profile.key_env is None
        cached = None if fresh else self._plans.get(profile)
        if cached is None:
            try:
                cached = per_item_plan(plan_modulation(profile, self.model.labels))
            except ProfileError as exc:  # e.g. a focus class this model does not have
                raise RequestError(400, exc.message, exc.hint) from None
            if not fresh:
                if len(self._plans) >= 1024:  # requests bring their own sigmas and seeds: bounded
                    self._plans.pop(next(iter(self._plans)))
                self._plans[profile] = cached
        return cached

    def admit(self, content_type: str, body: bytes, query: Mapping[str, str]) -> ImageJob:
        """Parse, validate and decode one request; RequestError (4xx, one line) for anything wrong."""
        from aim_cli import serving
        from aim_cli.images import pixel_key
        from aim_cli.models.checkpoint_files import check_model_input

        data, fields = parse_request(content_type, body, query)
        options = {name: fields.pop(name) for name in ANSWER_FIELDS if name in fields}
        unknown = sorted(name for name in fields if name[: len(serving.ARG_PREFIX)].lower() != serving.ARG_PREFIX)
        if unknown:
            allowed = ", ".join((*serving.REQUEST_ARGS, *ANSWER_FIELDS))
            raise RequestError(400, f"unknown request field {unknown[0][:40]!r}", f"allowed: {allowed}")
        try:
            resolution = resolve(fields, self.policy)
        except ProfileError as exc:
            raise RequestError(400, exc.message, exc.hint) from None
        mask_format = options.get("mask_format", "png")
        if mask_format not in MASK_FORMATS:
            raise RequestError(400, f"mask_format: expected png or ids, got {str(mask_format)[:40]!r}")
        topk = _topk(options.get("topk", 1))
        plan = self.plan(resolution.profile)
        image = decode_request_image(
            data, lambda width, height: self._check_answer_size(width, height, topk, mask_format)
        )
        try:
            check_model_input(self.model, image, REQUEST_NAME)
        except InputError as exc:  # the model would resize it past the pixel bound
            raise RequestError(413, exc.message, exc.hint) from None
        return ImageJob(image, pixel_key(image), plan, resolution.tier, topk, mask_format)

    def _check_answer_size(self, width: int, height: int, topk: int, mask_format: str) -> None:
        """Refuse (413) a request whose answer could pass the answer bound, before any work on it.

        The bound on what one answer may cost the server (a class-id mask of a 4096x4096 image is
        tens of MB of JSON and GBs of Python objects while built). Palette PNG masks compress and
        are checked once encoded; the other answers are bounded here from their largest possible size.
        """
        labels = self.model.labels
        names = sum(len(str(label)) + 32 for label in labels)  # "fractions" (and the top-k labels) at most
        if self.spec.task == "classify":
            size = 256 + min(topk, len(labels)) * 96 + names
        elif mask_format == "ids":
            digits = len(str(max(len(labels) - 1, 0)))
            # Compact JSON, "7," per pixel and "[...]," per row (either way round: EXIF may turn the image).
            size = 256 + names + width * height * (digits + 1) + 2 * max(width, height)
        else:
            return
        if size > SERVE_ANSWER_BYTES.value():
            fix = (
                "ask for mask_format=png, or send a smaller image" if mask_format == "ids" else "ask for a smaller topk"
            )
            raise RequestError(
                413,
                f"the answer could be {size:,} bytes ({width}x{height} {mask_format}), over the bound",
                f"{fix}; {SERVE_ANSWER_BYTES.hint()}",
            )

    def answer(self, jobs: Sequence[ImageJob]) -> list[tuple[int, dict[str, Any]]]:
        """(HTTP status, answer) per job, in order; one forward pass per batch (per image size when segmenting)."""
        from aim_cli.certificates import name_certificate

        answers = self._classify(jobs) if self.spec.task == "classify" else self._segment(jobs)
        # Every answer names its tier's certificate (None: the clean model or an uncertified tier).
        return [
            (status, name_certificate(body, self.tiers, job.tier) if status == 200 else body)
            for (status, body), job in zip(answers, jobs)
        ]

    def _classify(self, jobs: Sequence[ImageJob]) -> list[tuple[int, dict[str, Any]]]:
        """Top-k classes with probabilities, each image modulated by its own tier."""
        import torch

        from aim_cli.modulation import nonfinite_items
        from aim_cli.tasks.batches import nonfinite_error
        from aim_cli.tasks.classify import top_predictions

        clean = self.model.logits([job.image for job in jobs])
        broken = set(nonfinite_items(clean))
        answers: list[tuple[int, dict[str, Any]]] = [(500, {"error": str(nonfinite_error("the image"))})] * len(jobs)
        groups: dict[int, list[int]] = {}
        for index, job in enumerate(jobs):
            if index not in broken:
                groups.setdefault(id(job.plan), []).append(index)
        for members in groups.values():
            plan = jobs[members[0]].plan
            rows = clean.index_select(0, torch.tensor(members, dtype=torch.long, device=clean.device))
            noisy = plan.apply(rows, 1, [jobs[i].key for i in members])
            ranked = top_predictions(noisy, self.model.labels, max(jobs[i].topk for i in members))
            for index, top in zip(members, ranked):
                top = top[: jobs[index].topk]
                answers[index] = (
                    200,
                    {
                        "tier": jobs[index].tier,
                        "prediction": top[0].label,
                        "class_id": top[0].class_id,
                        "probability": round(top[0].probability, 6),
                        "topk": [
                            {"label": p.label, "class_id": p.class_id, "probability": round(p.probability, 6)}
                            for p in top
                        ],
                    },
                )
        return answers

    def _segment(self, jobs: Sequence[ImageJob]) -> list[tuple[int, dict[str, Any]]]:
        """Each image's mask (palette PNG or class ids) and class shares, modulated by its own tier."""
        from aim_cli.modulation import nonfinite_items
        from aim_cli.tasks.batches import nonfinite_error
        from aim_cli.tasks.segment import decide

        answers: list[tuple[int, dict[str, Any]]] = [(500, {"error": "not answered"})] * len(jobs)
        sizes: dict[tuple[int, int], list[int]] = {}
        for index, job in enumerate(jobs):  # images of one size share a forward pass, as in `aim segment`
            sizes.setdefault((job.image.height, job.image.width), []).append(index)
        for size, members in sizes.items():
            low = self.model.logits([jobs[i].image for i in members])
            broken = set(nonfinite_items(low))
            for row, index in enumerate(members):
                if row in broken:
                    answers[index] = (500, {"error": str(nonfinite_error("the image"))})
                    continue
                job = jobs[index]
                mask, _ = decide(low[row : row + 1], size, job.plan.modulation, job.plan.noise, [job.key])
                try:
                    answers[index] = (200, self._mask_answer(job, mask[0]))
                except RequestError as exc:
                    answers[index] = (exc.status, {"error": str(exc)})
        return answers

    def _mask_answer(self, job: ImageJob, mask: np.ndarray) -> dict[str, Any]:
        """The JSON answer for one mask: size, class shares of the classes present, and the mask itself."""
        from aim_cli.masks import mask_image

        counts = np.bincount(mask.ravel(), minlength=len(self.model.labels))
        total = max(1, int(counts.sum()))
        labels = self.model.labels
        answer: dict[str, Any] = {
            "tier": job.tier,
            "width": int(mask.shape[1]),
            "height": int(mask.shape[0]),
            "fractions": {labels[k]: round(int(counts[k]) / total, 6) for k in np.flatnonzero(counts)},
        }
        if job.mask_format == "ids":
            answer["class_ids"] = mask.astype(np.int64).tolist()
        else:
            buffer = io.BytesIO()
            mask_image(mask, self.colours).save(buffer, format="PNG")
            if buffer.tell() * 4 // 3 > SERVE_ANSWER_BYTES.value():  # base64 grows it by a third
                raise RequestError(
                    413, f"the mask PNG is {buffer.tell():,} bytes, over the answer bound", SERVE_ANSWER_BYTES.hint()
                )
            answer["mask_png"] = base64.b64encode(buffer.getvalue()).decode("ascii")
        return answer


__all__ = [
    "EndpointSpec",
    "ImageJob",
    "RequestError",
    "VisionTiers",
    "decode_request_image",
    "parse_request",
    "per_item_plan",
]
