"""The hostile pass of round 3 on the tier server: one table of HTTP requests, run two ways.

tests/test_tier_server.py runs every case through the engine-neutral endpoint core (no Ray, in
`make test`); tests/test_tier_server_live.py posts the same requests to a live Ray Serve
(`make test-ray`). tests/data/hostile_round3/server.md records the table with what each case did
before and after.
"""

from __future__ import annotations

import base64
import functools
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import REPO

DEMO = REPO / "aim_cli" / "demo"
SAMPLE = sorted((DEMO / "samples" / "classify").glob("*.png"))[0]
SEGMENT_SAMPLE = sorted((DEMO / "samples" / "segment").glob("*.png"))[0]
KEY = "tier-server-secret"
BOUNDARY = "aim-hostile"

# Endpoints of the table: the same folder of tiers, four servers.
# floor: --default-profile free (keyed, sigma 3), no opt-ins; strict: no default, no opt-ins;
# open: --allow-ad-hoc-tiers --allow-clean; segment: a segmenter, no default, no opt-ins.
ENDPOINTS = {
    "floor": {"task": "classify", "default_profile": "free"},
    "strict": {"task": "classify"},
    "open": {"task": "classify", "allow_ad_hoc": True, "allow_clean": True},
    "segment": {"task": "segment"},
}


def write_tiers(folder: Path) -> Path:
    """free: keyed sigma 3; gold: seeded sigma 0.5; fresh: sigma 1, a fresh seed per request."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "free.yaml").write_text("version: 1\nutility: {sigma: 3.0}\nnoise: {key_env: AIM_NOISE_KEY}\n")
    (folder / "gold.yaml").write_text("version: 1\nutility: {sigma: 0.5}\nnoise: {seed: 7}\n")
    (folder / "fresh.yaml").write_text("version: 1\nutility: {sigma: 1.0}\n")
    return folder


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@functools.lru_cache(maxsize=8)
def grey_png(width: int, height: int, rows: bytes | None = None) -> bytes:
    """An 8-bit greyscale PNG of width x height: all black (real data) unless `rows` gives the IDAT stream."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    if rows is None:
        rows = zlib.compress(b"\0" * ((width + 1) * height), 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def header_only_png(width: int, height: int) -> bytes:
    """A PNG declaring width x height around 86 KB of a stream cut short: only its header is ever read."""
    return grey_png(width, height, zlib.compress(b"\0" * 8_000_000, 9)[:86_000])


def lying_png() -> bytes:
    """A PNG whose header says 8x8 and whose data inflates to 50 MB: the decoder must stop at 8x8."""
    return grey_png(8, 8, zlib.compress(b"\0" * 50_000_000, 9))


def jpeg_header(width: int, height: int) -> bytes:
    """A JPEG start (SOI, SOF0) declaring width x height, no scan data."""
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + sof + b"\xff\xd9"


def multipart(image: bytes | None, fields: list[tuple[str, str]], extra_images: int = 0) -> tuple[str, bytes]:
    """multipart/form-data with an image part (and more image parts) and text fields, repeats allowed."""
    parts = []
    for data in ([image] if image is not None else []) + [image or b""] * extra_images:
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
            "Content-Type: image/png\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    for name, value in fields:
        parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    return f"multipart/form-data; boundary={BOUNDARY}", b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def json_body(image: bytes, text: str = "") -> bytes:
    """A JSON request: the image as base64, then `text` (raw JSON members, so keys may repeat)."""
    encoded = base64.b64encode(image).decode()
    return ('{"image": "' + encoded + '"' + (", " + text if text else "") + "}").encode()


@dataclass(frozen=True)
class Case:
    """One hostile request: where it goes, what it sends, what the server must answer."""

    name: str
    endpoint: str
    request: Callable[[], tuple[str, bytes]]  # (content type, body)
    query: str = ""
    status: int = 400
    fragment: str = ""  # in the error (4xx) or equal to the answer's tier (200: "tier=NAME", "tier=None")
    severity: str = "-"  # before the fix: critical / major / minor / - (already handled)
    before: str = ""  # what the server did before this round
    env: dict[str, str] = field(default_factory=dict)


def raw(
    image: bytes | Callable[[], bytes] | None = None, content_type: str = "image/png"
) -> Callable[[], tuple[str, bytes]]:
    """A raw-bytes request of the sample image (or `image`, built when the case runs if a callable)."""

    def build() -> tuple[str, bytes]:
        if image is None:
            return content_type, SAMPLE.read_bytes()
        return content_type, image() if callable(image) else image

    return build


def form(fields: list[tuple[str, str]], extra_images: int = 0) -> Callable[[], tuple[str, bytes]]:
    return lambda: multipart(SAMPLE.read_bytes(), fields, extra_images)


def as_json(text: str = "", content_type: str = "application/json") -> Callable[[], tuple[str, bytes]]:
    return lambda: (content_type, json_body(SAMPLE.read_bytes(), text))


def seg(image: Callable[[], bytes]) -> Callable[[], tuple[str, bytes]]:
    return lambda: ("image/png", image())


CASES = [
    # --- the default tier is a floor ------------------------------------------------------------
    Case(
        "sigma 0, no tier, default set",
        "floor",
        raw(),
        "?aim_sigma=0",
        400,
        "this server's default) fixes its own sigma",
        "critical",
        "200, tier null: the clean model",
    ),
    Case(
        "sigma -0",
        "floor",
        raw(),
        "?aim_sigma=-0",
        400,
        "fixes its own sigma",
        "critical",
        "200, tier null: the clean model",
    ),
    Case(
        "sigma 1e-300",
        "floor",
        raw(),
        "?aim_sigma=1e-300",
        400,
        "fixes its own sigma",
        "critical",
        "200, tier null: clean in effect",
    ),
    Case(
        "sigma 5e-324 (denormal)",
        "floor",
        raw(),
        "?aim_sigma=5e-324",
        400,
        "fixes its own sigma",
        "critical",
        "200, tier null: clean in effect",
    ),
    Case("sigma nan", "floor", raw(), "?aim_sigma=nan", 400, "aim_sigma", "-", "400 expected a number"),
    Case(
        "sigma NaN as JSON", "floor", as_json('"aim_sigma": NaN'), "", 400, "aim_sigma", "-", "400 sigma must be finite"
    ),
    Case("sigma 1e309 (inf)", "floor", raw(), "?aim_sigma=1e309", 400, "aim_sigma", "-", "400 sigma must be finite"),
    Case(
        "sigma 0 + keyed",
        "floor",
        raw(),
        "?aim_sigma=0&aim_keyed=true",
        400,
        "fixes its own",
        "critical",
        "200, tier null: the clean model",
    ),
    Case(
        "focus only, no tier",
        "floor",
        raw(),
        "?aim_focus=ring",
        200,
        "tier=free",
        "critical",
        "200, tier null: focus noise only, no utility noise",
    ),
    Case("focus sigma only", "floor", raw(), "?aim_focus_sigma=2", 200, "tier=free", "-", "400 sets no modulation"),
    Case(
        "keyed false, no tier",
        "floor",
        raw(),
        "?aim_keyed=false",
        400,
        "fixes its own noise",
        "-",
        "400 sets no modulation",
    ),
    Case(
        "seed only, no tier", "floor", raw(), "?aim_seed=5", 400, "fixes its own noise", "-", "400 sets no modulation"
    ),
    Case(
        "higher sigma without opt-in",
        "floor",
        raw(),
        "?aim_sigma=9",
        400,
        "fixes its own sigma",
        "major",
        "200, tier null: an ad-hoc tier",
    ),
    Case(
        "sigma as JSON list", "floor", as_json('"aim_sigma": [0]'), "", 400, "aim_sigma", "-", "400 expected a number"
    ),
    Case(
        "sigma as JSON object",
        "floor",
        as_json('"aim_sigma": {"$lt": 1}'),
        "",
        400,
        "aim_sigma",
        "-",
        "400 expected a number",
    ),
    Case("sigma true", "floor", as_json('"aim_sigma": true'), "", 400, "aim_sigma", "-", "400 expected a number"),
    Case("no fields: the default", "floor", raw(), "", 200, "tier=free", "-", "200 tier free"),
    Case(
        "another tier by name",
        "floor",
        raw(),
        "?aim_profile=gold",
        200,
        "tier=gold",
        "-",
        "200 tier gold (a folder tier: the gateway's choice)",
    ),
    # --- names: case, traversal, unicode --------------------------------------------------------
    Case(
        "AIM_SIGMA upper case",
        "floor",
        raw(),
        "?AIM_SIGMA=0",
        400,
        "write it aim_sigma",
        "-",
        "400 unknown request field",
    ),
    Case(
        "Aim_Profile mixed case",
        "floor",
        raw(),
        "?Aim_Profile=gold",
        400,
        "write it aim_profile",
        "-",
        "400 unknown request field",
    ),
    Case(
        "aim_ prefix alone",
        "floor",
        raw(),
        "?aim_=1",
        400,
        "unknown request argument 'aim_'",
        "-",
        "400 unknown request argument",
    ),
    Case(
        "tier ../gold", "floor", raw(), "?aim_profile=../gold", 400, "unknown tier '../gold'", "-", "400 unknown tier"
    ),
    Case("tier with NUL", "floor", raw(), "?aim_profile=gold%00", 400, "unknown tier", "-", "400 unknown tier"),
    Case("tier GOLD", "floor", raw(), "?aim_profile=GOLD", 400, "unknown tier 'GOLD'", "-", "400 unknown tier"),
    Case("tier unicode", "floor", raw(), "?aim_profile=g%C3%B6ld", 400, "unknown tier", "-", "400 unknown tier"),
    Case(
        "tier as JSON null",
        "floor",
        as_json('"aim_profile": null'),
        "",
        400,
        "unknown tier None",
        "-",
        "400 unknown tier",
    ),
    Case(
        "tier as JSON list",
        "floor",
        as_json('"aim_profile": ["gold"]'),
        "",
        400,
        "unknown tier",
        "-",
        "400 unknown tier",
    ),
    Case(
        "tier of 10,000 chars",
        "floor",
        raw(),
        "?aim_profile=" + "x" * 10_000,
        400,
        "unknown tier",
        "-",
        "400 unknown tier (cut short)",
    ),
    Case(
        "100,000 focus words",
        "open",
        as_json('"aim_sigma": 1, "aim_focus": ' + json.dumps(["cat"] * 100_000)),
        "",
        400,
        "focus targets",
        "-",
        "400 focus targets bound",
    ),
    # --- a field in two places --------------------------------------------------------------------
    Case(
        "query tier vs JSON tier",
        "floor",
        as_json('"aim_profile": "gold"'),
        "?aim_profile=free",
        400,
        "given twice (the query string and the JSON body)",
        "major",
        "200 tier gold: the body overrode the gateway's query",
    ),
    Case(
        "query tier vs form tier",
        "floor",
        form([("aim_profile", "gold")]),
        "?aim_profile=free",
        400,
        "given twice (the query string and the form)",
        "major",
        "200 tier gold: the form overrode the query",
    ),
    Case(
        "query tier twice",
        "floor",
        raw(),
        "?aim_profile=free&aim_profile=gold",
        400,
        "given twice (the query string)",
        "major",
        "200 tier gold: last one wins",
    ),
    Case(
        "JSON key twice",
        "floor",
        as_json('"aim_profile": "free", "aim_profile": "gold"'),
        "",
        400,
        "given twice (the JSON body)",
        "major",
        "200 tier gold: last one wins",
    ),
    Case(
        "form field twice",
        "floor",
        form([("aim_profile", "free"), ("aim_profile", "gold")]),
        "",
        400,
        "given twice (the form)",
        "major",
        "200 tier gold: last one wins",
    ),
    Case(
        "same tier in query and JSON",
        "floor",
        as_json('"aim_profile": "gold"'),
        "?aim_profile=gold",
        200,
        "tier=gold",
        "-",
        "200 tier gold",
    ),
    Case(
        'topk 1 and "1"',
        "floor",
        as_json('"topk": "1"'),
        "?topk=1",
        400,
        "given twice",
        "minor",
        "400 topk: the body's \"1\" silently replaced the query's 1",
    ),
    Case(
        "two image parts",
        "floor",
        form([("aim_profile", "gold")], extra_images=1),
        "",
        400,
        "two parts named 'image'",
        "minor",
        "200: the last image",
    ),
    Case(
        "image in the query",
        "floor",
        raw(),
        "?image=x",
        400,
        "unknown request field 'image'",
        "-",
        "400 unknown request field",
    ),
    # --- images: lying headers, bombs, formats ---------------------------------------------------
    Case(
        "86 KB PNG of 9400x9400 (real data)",
        "floor",
        raw(lambda: grey_png(9400, 9400)),
        "",
        413,
        "declares 9400x9400 pixels",
        "major",
        "200 after decoding: 930 MB and 3-4 s per request (issue 22)",
    ),
    Case(
        "PNG declaring 4097x4096",
        "floor",
        raw(lambda: header_only_png(4097, 4096)),
        "",
        413,
        "declares 4097x4096",
        "minor",
        "400 after a decode attempt (a real one: 50 MB decoded)",
    ),
    Case(
        "PNG declaring 40000x40000",
        "floor",
        raw(lambda: header_only_png(40000, 40000)),
        "",
        413,
        "pixels",
        "-",
        "413 decompression bomb",
    ),
    Case(
        "JPEG header 65500x65500",
        "floor",
        raw(jpeg_header(65500, 65500), "image/jpeg"),
        "",
        413,
        "pixels",
        "-",
        "413 decompression bomb",
    ),
    Case(
        "JPEG header 5000x5000",
        "floor",
        raw(jpeg_header(5000, 5000), "image/jpeg"),
        "",
        413,
        "declares 5000x5000",
        "-",
        "400 after a decode attempt",
    ),
    Case(
        "PNG 8x8 header, 50 MB of data",
        "floor",
        raw(lying_png),
        "",
        200,
        "tier=free",
        "-",
        "200: the decoder stops at 8x8",
    ),
    Case(
        "EPS (Ghostscript)",
        "floor",
        raw(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n"),
        "",
        400,
        "not an image",
        "minor",
        "400 only because Ghostscript is not installed: Pillow's EPS decoder runs it",
    ),
    Case(
        "4096x4096 ids mask",
        "segment",
        seg(lambda: grey_png(4096, 4096)),
        "?aim_profile=free&mask_format=ids",
        413,
        "over the bound",
        "major",
        "200 after 120 s: a 33.5 MB answer (2.1 GB while built)",
    ),
    Case(
        "1024x1024 ids mask",
        "segment",
        seg(lambda: grey_png(1024, 1024)),
        "?aim_profile=free&mask_format=ids",
        200,
        "tier=free",
        "-",
        "200 (2 MB answer)",
    ),
    Case(
        "gzip-encoded body",
        "floor",
        raw(lambda: zlib.compress(SAMPLE.read_bytes())),
        "",
        400,
        "not an image",
        "-",
        "400 not an image",
    ),
    Case(
        "JSON nested 100,000 deep",
        "floor",
        lambda: ("application/json", b"[" * 100_000 + b"]" * 100_000),
        "",
        400,
        "not valid JSON",
        "minor",
        "500 RecursionError",
    ),
    Case(
        "JSON body that is a list",
        "floor",
        lambda: ("application/json", b"[1]"),
        "",
        400,
        "must be an object",
        "-",
        "400",
    ),
    Case("empty body", "floor", lambda: ("image/png", b""), "", 400, "carries no image", "-", "400"),
    Case("content type APPLICATION/JSON", "floor", as_json("", "APPLICATION/JSON"), "", 200, "tier=free", "-", "200"),
    Case(
        "content type text/html",
        "floor",
        lambda: ("text/html", b"<html>"),
        "",
        415,
        "unsupported content type",
        "-",
        "415",
    ),
    Case("multipart without boundary", "floor", lambda: ("multipart/form-data", b"--x\r\n"), "", 400, "", "-", "400"),
    Case("topk 1e9 as float", "floor", raw(), "?topk=1e9", 400, "topk", "-", "400"),
    Case("topk 10^9 as int", "floor", raw(), "?topk=1000000000", 200, "tier=free", "-", "200 (cut to the classes)"),
    # --- no default, no opt-ins: the folder's tiers only ---------------------------------------------
    Case(
        "no fields, no default",
        "strict",
        raw(),
        "",
        400,
        "names no tier",
        "critical",
        "200, tier null: the clean model",
    ),
    Case(
        "ad-hoc sigma, no default",
        "strict",
        raw(),
        "?aim_sigma=2",
        400,
        "serves only its tiers",
        "major",
        "200, tier null: an ad-hoc tier",
    ),
    Case(
        "ad-hoc focus, no default",
        "strict",
        raw(),
        "?aim_focus=ring",
        400,
        "serves only its tiers",
        "critical",
        "200, tier null: focus only, no utility noise",
    ),
    Case(
        "ad-hoc keyed sigma 0",
        "strict",
        raw(),
        "?aim_sigma=0&aim_keyed=true",
        400,
        "serves only its tiers",
        "critical",
        "200, tier null: the clean model",
    ),
    Case("a tier", "strict", raw(), "?aim_profile=gold", 200, "tier=gold", "-", "200 tier gold"),
    Case(
        "a tier and its open focus",
        "strict",
        raw(),
        "?aim_profile=gold&aim_focus=ring",
        200,
        "tier=gold",
        "-",
        "200 tier gold",
    ),
    Case(
        "a fresh tier and a seed",
        "strict",
        raw(),
        "?aim_profile=fresh&aim_seed=3",
        200,
        "tier=fresh",
        "-",
        "200 tier fresh",
    ),
    # --- with the opt-ins -------------------------------------------------------------------------------
    Case("opted in: sigma 0", "open", raw(), "?aim_sigma=0", 200, "tier=None", "-", "200 tier null"),
    Case("opted in: no fields", "open", raw(), "", 200, "tier=None", "-", "200 tier null"),
    Case(
        "opted in: a tier, lower sigma",
        "open",
        raw(),
        "?aim_profile=free&aim_sigma=1",
        400,
        "less noise than tier 'free'",
        "-",
        "400 fixes its own sigma",
    ),
    Case(
        "opted in: a tier, higher sigma",
        "open",
        raw(),
        "?aim_profile=gold&aim_sigma=2",
        200,
        "tier=None",
        "-",
        "400 fixes its own sigma",
    ),
    Case(
        "opted in: keyed to seeded",
        "open",
        raw(),
        "?aim_profile=free&aim_seed=1",
        400,
        "less noise than tier 'free'",
        "-",
        "400 fixes its own noise",
    ),
]
