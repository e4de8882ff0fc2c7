"""An ASGI middleware `aim serve` hands vLLM's OpenAI server: an aim field is read from one place, once.

vLLM reads aim's arguments only from the JSON body's `vllm_xargs` and keeps the last of a key
given twice; it ignores the query string. So a gateway that writes a user's tier into the query,
or a body that repeats `aim_profile`, would be served something the gateway did not choose.
This guard refuses both (HTTP 400, one line), as the image endpoints refuse a field given twice.
Pure ASGI: it imports neither vLLM nor Starlette, and passes every other request through untouched.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

from aim_cli.tier_policy import ARG_PREFIX

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
XARGS = "vllm_xargs"


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


def body_problem(body: bytes) -> str | None:
    """Why a JSON body is refused: an aim field (or vllm_xargs) given twice with different values."""
    try:
        json.loads(body, object_pairs_hook=_pairs_once)
    except _Repeated as repeated:
        return f"aim: {str(repeated)[:40]!r} is given twice in the JSON body with different values (give it once)"
    except (ValueError, RecursionError):
        return None  # not JSON: vLLM answers that itself
    return None


async def _refuse(send: Send, message: str) -> None:
    """A 400 in the OpenAI server's error shape."""
    body = json.dumps({"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}})
    await send({"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body.encode()})


class AimRequestGuard:
    """ASGI middleware (vLLM's --middleware): refuses aim fields in the query and repeated aim fields in the body."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

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
        problem = body_problem(body) if first is None else None
        if problem is not None:
            await _refuse(send, problem)
            return
        replayed = [first or {"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:
            return replayed.pop() if replayed else await receive()

        await self.app(scope, replay, send)


__all__ = ["AimRequestGuard", "body_problem", "query_problem"]
