"""An ASGI middleware `aim serve` hands vLLM's OpenAI server: an aim field is read from one place, once.

vLLM reads aim's arguments only from the JSON body's `vllm_xargs` and keeps the last of a key
given twice; it ignores the query string. So a gateway that writes a user's tier into the query,
or a body that repeats `aim_profile`, would be served something the gateway did not choose.
This guard refuses both (HTTP 400, one line), as the image endpoints refuse a field given twice.

It also names, on every answer to a completions or chat request, the tier that served it and
that tier's certificate: `X-Aim-Tier` / `X-Aim-Certificate` headers (streamed answers too) and,
on a JSON answer, top-level `"tier"` and `"certificate"` fields, as the Ray endpoint does. The
tier comes from tier_policy.resolve under the server's own policy, the rule the logits processor
applies, so the name cannot disagree with the noise. A request the policy refuses is left alone
(the processor refuses it). Pure ASGI: it imports neither vLLM nor Starlette.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from aim_cli.certificates import answer_headers, certificate_id
from aim_cli.errors import ProfileError
from aim_cli.tier_policy import ARG_PREFIX, TierPolicy, resolve

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
XARGS = "vllm_xargs"
# The OpenAI endpoints whose answers come from the logits processor (so name a tier).
ANSWER_PATHS = ("/v1/completions", "/v1/chat/completions")


class _Repeated(ValueError):
    """A JSON object names an aim field (or vllm_xargs) twice with different values."""


def _is_aim(name: str) -> bool:
    return name[: len(ARG_PREFIX)].lower() == ARG_PREFIX


def _pairs_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object_pairs_hook: aim fields and vllm_xargs at most once (or twice with one value)."""
    seen: dict[str, Any] = {}
    for name, value in pairs:
        if name in seen and (name == XARGS or _is_aim(name)) and seen[name] != value:
            raise _Repeated(name)
        seen[name] = value
    return seen


def query_problem(query: bytes) -> str | None:
    """Why the query string is refused: it carries an aim field, which vLLM would silently ignore."""
    for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if _is_aim(name):
            return (
                f"aim: {name[:40]!r} in the query string: this server reads aim fields only from the JSON "
                f"body's {XARGS} (send them there, once)"
            )
    return None


def read_body(body: bytes) -> tuple[str | None, Any]:
    """(why the JSON body is refused or None, the parsed body or None when it is not JSON): one parse."""
    try:
        return None, json.loads(body, object_pairs_hook=_pairs_once)
    except _Repeated as repeated:
        return (
            f"aim: {str(repeated)[:40]!r} is given twice in the JSON body with different values (give it once)",
            None,
        )
    except (ValueError, RecursionError):
        return None, None  # not JSON: vLLM answers that itself


def body_problem(body: bytes) -> str | None:
    """Why a JSON body is refused: an aim field (or vllm_xargs) given twice with different values."""
    return read_body(body)[0]


def served_tier(request: Any, policy: TierPolicy) -> dict[str, Any] | None:
    """{"tier", "certificate"} of the answer to a parsed request body; None when the policy refuses it.

    The fields are vllm_xargs, as vLLM hands them to the processor as extra_args.
    """
    if not isinstance(request, dict):
        return None
    xargs = request.get(XARGS)
    if xargs is not None and not isinstance(xargs, dict):
        return None  # vLLM refuses it
    try:
        tier = resolve(xargs, policy).tier
    except ProfileError:
        return None  # refused by the processor, which says why
    return {"tier": tier, "certificate": certificate_id(policy.tiers, tier)}


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes:
    """A response header's value (b"" when absent)."""
    return next((value for key, value in headers if key.lower() == name), b"")


def naming_send(send: Send, named: dict[str, Any]) -> Send:
    """`send` that names the tier on a 200 answer: headers always, JSON fields on a JSON answer."""
    extra = [(k.lower().encode(), v.encode("latin-1")) for k, v in answer_headers(named).items()]
    held: dict[str, Any] = {}  # the start message of a JSON answer, and its body so far

    async def wrapped(message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.start":
            if message.get("status") != 200:
                await send(message)
                return
            headers = [(k, v) for k, v in message.get("headers") or [] if not k.lower().startswith(b"x-aim-")]
            start = {**message, "headers": headers + extra}
            mime = _header(headers, b"content-type").split(b";")[0].strip().lower()
            if mime == b"application/json":
                held.update(start=start, body=[])  # its length changes: sent with the body
            else:
                await send(start)  # a stream (SSE): the headers name the tier
            return
        if kind != "http.response.body" or "start" not in held:
            await send(message)
            return
        held["body"].append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(held.pop("body"))
        start = held.pop("start")
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError):
            answer = None
        if isinstance(answer, dict):
            answer.update(named)
            body = json.dumps(answer, ensure_ascii=False).encode()
            start["headers"] = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            start["headers"].append((b"content-length", str(len(body)).encode()))
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return wrapped


async def _refuse(send: Send, message: str) -> None:
    """A 400 in the OpenAI server's error shape."""
    body = json.dumps({"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}})
    await send({"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body.encode()})


class AimRequestGuard:
    """ASGI middleware (vLLM's --middleware): refuses aim fields in the query and repeated aim fields in the body."""

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], policy: TierPolicy | None = None
    ) -> None:
        self.app = app
        if policy is None:
            # The processor's own policy, from the environment `aim serve` sets (loaded once per process).
            from aim_cli.serving import server_policy  # torch: imported where vLLM already runs

            policy = server_policy()
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        problem = query_problem(scope.get("query_string") or b"")
        if problem is not None:
            await _refuse(send, problem)
            return
        headers = dict(scope.get("headers") or [])
        if headers.get(b"content-type", b"").split(b";")[0].strip().lower() != b"application/json":
            await self.app(scope, receive, send)
            return
        chunks, first = [], None
        while True:  # the body, as vLLM reads it anyway; then handed on unchanged
            message = await receive()
            if message.get("type") != "http.request":
                first = message  # the client went away: let the app see it
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem, request = read_body(body) if first is None else (None, None)
        if problem is not None:
            await _refuse(send, problem)
            return
        replayed = [first or {"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:
            return replayed.pop() if replayed else await receive()

        path = str(scope.get("path") or "")
        named = served_tier(request, self.policy) if path.endswith(ANSWER_PATHS) else None
        await self.app(scope, replay, send if named is None else naming_send(send, named))


__all__ = ["AimRequestGuard", "body_problem", "query_problem", "read_body", "served_tier"]
