"""The request guard `aim serve` hands vLLM (--middleware): pure ASGI, so tested here without vLLM.

vLLM reads aim fields only from the body's vllm_xargs and keeps the last of a repeated key; the
guard refuses aim fields in the query and repeated ones in the body, as the image endpoints do.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from aim_cli.integrations.vllm_http import AimRequestGuard

BODY = {"model": "m", "prompt": "hi", "max_tokens": 4}


def call(body: bytes, query: bytes = b"", method: str = "POST", chunks: int = 1) -> tuple[int, bytes, bytes | None]:
    """(status, answer body, the body the app received or None) of one request through the guard."""
    seen: list[bytes] = []

    async def app(scope, receive, send):
        message = await receive()
        seen.append(message.get("body", b""))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    size = max(1, -(-len(body) // chunks))
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "query_string": query,
        "headers": [(b"content-type", b"application/json")],
    }
    asyncio.run(AimRequestGuard(app)(scope, receive, send))
    return sent[0]["status"], sent[1]["body"], seen[0] if seen else None


@pytest.mark.parametrize(
    ("body", "query", "fragment"),
    [
        (b'{"vllm_xargs": {"aim_profile": "free-tier", "aim_profile": "gold"}}', b"", "'aim_profile' is given twice"),
        (
            b'{"vllm_xargs": {"aim_profile": "a"}, "vllm_xargs": {"aim_profile": "b"}}',
            b"",
            "'vllm_xargs' is given twice",
        ),
        (b'{"vllm_xargs": {"AIM_SIGMA": 0, "AIM_SIGMA": 1}}', b"", "'AIM_SIGMA' is given twice"),
        (json.dumps(BODY).encode(), b"aim_profile=free-tier", "'aim_profile' in the query string"),
        (json.dumps(BODY).encode(), b"x=1&Aim_Sigma=0", "'Aim_Sigma' in the query string"),
    ],
)
def test_a_field_in_two_places_is_a_400(body, query, fragment):
    status, answer, reached = call(body, query)
    message = json.loads(answer)["error"]["message"]
    assert status == 400 and fragment in message and reached is None and "\n" not in message


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({**BODY, "vllm_xargs": {"aim_profile": "free-tier"}}).encode(),
        b'{"vllm_xargs": {"aim_profile": "gold", "aim_profile": "gold"}}',  # once in effect
        b'{"stop": ["a"], "stop": ["b"]}',  # not aim's: vLLM's business
        b"not json",  # vLLM answers that itself
        b"",
    ],
)
def test_other_requests_reach_vllm_unchanged(body):
    for chunks in (1, 3):
        status, answer, reached = call(body, chunks=chunks)
        assert (status, answer, reached) == (200, b"ok", body)


def test_other_methods_pass_through():
    assert call(b"", b"aim_profile=x", method="GET")[0] == 200
