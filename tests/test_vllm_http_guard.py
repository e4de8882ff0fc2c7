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


# --- every answer names its tier and certificate (issue 24, item 3) ---


def _tiers_folder(tmp_path):
    """A folder of tiers as `aim serve --profiles` gets it: 'gold' certified, 'free-tier' not."""
    import yaml

    from aim_cli.certificates import Certificate, Interval, settings_hash
    from aim_cli.profile import Profile

    certificate = Certificate(
        aim_version="0.1.0",
        created="2026-12-07T21:00:00Z",
        task="generate",
        model_spec="m",
        model_fingerprint="sha256:" + "a" * 64,
        data_spec="d",
        data_fingerprint="sha256:" + "b" * 64,
        items=100,
        metric="accuracy",
        target=0.6,
        method="exact",
        predicted=0.6,
        interval=Interval(0.5, 0.7, 0.95, 100, "meaning"),
        settings_hash=settings_hash(Profile(sigma=1.5, seed=7).to_dict()),
    )
    gold = {"version": 1, "name": "gold", "utility": {"sigma": 1.5}, "noise": {"seed": 7}}
    (tmp_path / "gold.yaml").write_text(yaml.safe_dump({**gold, "certificate": certificate.to_mapping()}))
    free = {"version": 1, "name": "free-tier", "utility": {"sigma": 4.0}, "noise": {"seed": 7}}
    (tmp_path / "free-tier.yaml").write_text(yaml.safe_dump(free))
    return certificate.id


EVENTS = [b'data: {"choices": [{"text": "h"}]}\n\n', b"data: [DONE]\n\n"]


async def openai_server(scope, receive, send):
    """A stand-in for vLLM's OpenAI server, sending what Starlette's JSONResponse / StreamingResponse send."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    request = json.loads(b"".join(chunks))
    if request.get("stream"):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for event in EVENTS:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    status = 400 if request.get("fail") else 200
    answer = json.dumps({"id": "cmpl-1", "choices": [{"text": "h\u00e9llo"}]}).encode()
    headers = [(b"content-length", str(len(answer)).encode()), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer[:5], "more_body": True})  # in two parts
    await send({"type": "http.response.body", "body": answer[5:], "more_body": False})


@pytest.fixture
def served(tmp_path, monkeypatch):
    """(one request through the guard -> (status, headers, body), gold's certificate id).

    The guard builds its policy from the environment `aim serve` sets, as the processor does.
    """
    gold_id = _tiers_folder(tmp_path)
    monkeypatch.setenv("AIM_PROFILES_DIR", str(tmp_path))
    monkeypatch.setenv("AIM_DEFAULT_PROFILE", "free-tier")
    monkeypatch.setenv("AIM_ALLOW_AD_HOC_TIERS", "0")
    monkeypatch.setenv("AIM_ALLOW_CLEAN", "0")
    guard = AimRequestGuard(openai_server)

    def post(path: str, body: dict) -> tuple[int, dict[str, str], bytes]:
        messages = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]
        sent: list[dict] = []

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
        }
        asyncio.run(guard(scope, receive, send))
        start, parts = sent[0], sent[1:]
        assert start["type"] == "http.response.start" and not parts[-1].get("more_body", False)
        headers = {key.decode(): value.decode() for key, value in start["headers"]}
        assert len(headers) == len(start["headers"])  # no header twice
        return start["status"], headers, b"".join(part["body"] for part in parts)

    return post, gold_id


@pytest.mark.parametrize(
    ("path", "xargs", "tier", "certified"),
    [
        ("/v1/completions", {"aim_profile": "gold"}, "gold", True),
        ("/v1/completions", {"aim_profile": "free-tier"}, "free-tier", False),
        ("/v1/completions", None, "free-tier", False),  # names none: the default tier
        ("/v1/chat/completions", {"aim_profile": "gold", "aim_focus": "cat"}, "gold", True),  # an open option
    ],
)
def test_a_json_answer_names_its_tier_and_certificate(served, path, xargs, tier, certified):
    post, gold_id = served
    status, headers, body = post(path, {**BODY, "vllm_xargs": xargs} if xargs is not None else BODY)
    certificate = gold_id if certified else None
    assert status == 200
    assert (headers["x-aim-tier"], headers["x-aim-certificate"]) == (tier, certificate or "none")
    answer = json.loads(body)
    assert (answer["tier"], answer["certificate"]) == (tier, certificate)  # the Ray answers' fields
    assert answer["choices"] == [{"text": "h\u00e9llo"}]  # the answer itself is kept
    assert int(headers["content-length"]) == len(body)


def test_a_streamed_answer_names_its_tier_in_its_headers(served):
    post, gold_id = served
    status, headers, body = post("/v1/completions", {**BODY, "stream": True, "vllm_xargs": {"aim_profile": "gold"}})
    assert status == 200 and (headers["x-aim-tier"], headers["x-aim-certificate"]) == ("gold", gold_id)
    assert body == b"".join(EVENTS) and "content-length" not in headers  # the events go through untouched


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {**BODY, "vllm_xargs": {"aim_sigma": 0}}),  # refused by the policy: the processor's
        ("/v1/completions", {**BODY, "vllm_xargs": {"aim_profile": "nope"}}),
        ("/v1/completions", {**BODY, "vllm_xargs": "aim_profile=gold"}),  # not vLLM's shape: vLLM refuses it
        ("/v1/completions", {**BODY, "fail": True}),  # an error answer names no tier
        ("/tokenize", BODY),  # serves no tier
    ],
)
def test_refused_requests_and_other_endpoints_are_not_named(served, path, body):
    post, _ = served
    _status, headers, answer = post(path, body)
    assert "x-aim-tier" not in headers and "tier" not in json.loads(answer)
    assert answer == json.dumps({"id": "cmpl-1", "choices": [{"text": "h\u00e9llo"}]}).encode()


def test_the_name_agrees_with_the_processor(served):
    """The named tier's profile is the one serving.request_profile resolves: one rule, one answer."""
    from aim_cli import serving

    post, _ = served
    policy = serving.server_policy()
    for xargs in ({"aim_profile": "gold"}, {"aim_profile": "free-tier", "aim_focus": "dog"}, {}):
        headers = post("/v1/completions", {**BODY, "vllm_xargs": xargs})[1]
        served_profile = serving.request_profile(xargs, policy)
        named = policy.tiers[headers["x-aim-tier"]]
        assert served_profile is not None and (named.sigma, named.seed) == (served_profile.sigma, served_profile.seed)
