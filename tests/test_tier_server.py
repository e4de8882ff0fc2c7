"""The tier server's hostile table (tests/server_cases.py) through the engine-neutral endpoint core, plus
the start-up checks of `aim serve` that need no engine: opt-ins, busy ports, unreachable clusters.

The same table runs against a live Ray Serve in tests/test_tier_server_live.py (`make test-ray`).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from aim_cli.engines.vision_tiers import EndpointSpec, RequestError, VisionTiers, parse_request
from aim_cli.errors import AimError
from tests.conftest import REPO, assert_user_error
from tests.server_cases import CASES, DEMO, ENDPOINTS, KEY, SAMPLE, Case, write_tiers

MODELS = {"classify": DEMO / "classifier", "segment": DEMO / "segmenter"}


@pytest.fixture(scope="module")
def tiers_dir(tmp_path_factory) -> Path:
    return write_tiers(tmp_path_factory.mktemp("server") / "tiers")


@pytest.fixture(scope="module")
def endpoints(tiers_dir) -> dict[str, VisionTiers]:
    """The table's four servers, as a replica builds them (the segmenter loads once, shared by name)."""
    built = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIM_NOISE_KEY", KEY)
        for name, options in ENDPOINTS.items():
            options = dict(options)
            task = options.pop("task")
            spec = EndpointSpec(task, str(MODELS[task]), profiles=str(tiers_dir), device="cpu", **options)
            built[name] = VisionTiers(spec)
    return built


def outcome(server: VisionTiers, case: Case) -> tuple[int, str]:
    """(status, error or 'tier=NAME') of a case's admission: what the HTTP answer would carry."""
    content_type, body = case.request()
    query = parse_qsl(case.query.lstrip("?"), keep_blank_values=True)
    try:
        job = server.admit(content_type, body, query)
    except RequestError as exc:
        return exc.status, str(exc)
    return 200, f"tier={job.tier}"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_requests(endpoints, case, monkeypatch):
    """Every case of the table: the status and message (or tier) it must get, in one line."""
    monkeypatch.setenv("AIM_NOISE_KEY", KEY)
    status, said = outcome(endpoints[case.endpoint], case)
    assert (status, case.fragment in said) == (case.status, True), said
    assert "\n" not in said


def test_the_table_is_large_and_covers_every_endpoint():
    assert len(CASES) >= 50 and {case.endpoint for case in CASES} == set(ENDPOINTS)
    assert len({case.name for case in CASES}) == len(CASES)


def test_the_pixel_bound_is_read_from_the_header(endpoints, monkeypatch):
    """A bound from AIM_SERVE_MAX_PIXELS, checked before decoding: a tiny bound refuses the 32x32 sample."""
    monkeypatch.setenv("AIM_NOISE_KEY", KEY)
    monkeypatch.setenv("AIM_SERVE_MAX_PIXELS", "100")
    with pytest.raises(RequestError, match="AIM_SERVE_MAX_PIXELS") as caught:
        endpoints["floor"].admit("image/png", SAMPLE.read_bytes(), [])
    assert caught.value.status == 413


def test_the_answer_bound_has_its_variable(endpoints, monkeypatch):
    from tests.server_cases import grey_png

    monkeypatch.setenv("AIM_NOISE_KEY", KEY)
    monkeypatch.setenv("AIM_SERVE_MAX_ANSWER_BYTES", "5000")
    query = [("aim_profile", "free"), ("mask_format", "ids")]
    with pytest.raises(RequestError, match="AIM_SERVE_MAX_ANSWER_BYTES") as caught:
        endpoints["segment"].admit("image/png", grey_png(100, 100), query)
    assert caught.value.status == 413
    # A PNG mask is checked once encoded: the demo's 100x100 answer is small, a 10-byte bound is not.
    monkeypatch.setenv("AIM_SERVE_MAX_ANSWER_BYTES", "10")
    job = endpoints["segment"].admit("image/png", grey_png(100, 100), [("aim_profile", "free")])
    status, answer = endpoints["segment"].answer([job])[0]
    assert status == 413 and "answer bound" in answer["error"]


def test_the_endpoint_says_what_it_serves(endpoints):
    assert "get tier 'free', and never less noise than it" in endpoints["floor"].info()["serves"][0]
    assert "clean model: on" in " ".join(endpoints["open"].info()["serves"])


def test_same_value_twice_is_one_field():
    _, fields = parse_request("image/png", b"x", [("aim_profile", "gold"), ("aim_profile", "gold")])
    assert fields == {"aim_profile": "gold"}


# --- aim serve's start-up: opt-ins, ports, clusters (no engine needed) ----------------------------------


@pytest.fixture(scope="module")
def unkeyed_tiers(tmp_path_factory) -> Path:
    """Tiers without a keyed one: the CLI then needs no secret and runs in this process (fast)."""
    folder = tmp_path_factory.mktemp("unkeyed")
    (folder / "gold.yaml").write_text("version: 1\nutility: {sigma: 0.5}\nnoise: {seed: 7}\n")
    (folder / "fresh.yaml").write_text("version: 1\nutility: {sigma: 1.0}\n")
    return folder


def test_dry_run_start_up_lines_say_which_opt_ins_are_on(aim, unkeyed_tiers):
    """The Ray path's start-up lines (the vLLM path prints the same lines from the same policy)."""
    model, tiers = str(DEMO / "classifier"), str(unkeyed_tiers)
    strict = aim("serve", model, "--profiles", tiers, "--default-profile", "gold", "--dry-run")
    assert strict.returncode == 0, strict.stderr
    assert "get tier 'gold', and never less noise than it" in strict.stderr
    assert "ad-hoc tiers: off" in strict.stderr and "clean model: off" in strict.stderr
    opened = aim("serve", model, "--profiles", tiers, "--allow-ad-hoc-tiers", "--allow-clean", "--dry-run")
    assert "ad-hoc tiers: on" in opened.stderr and "clean model: on" in opened.stderr
    assert '"allow_ad_hoc": true' in opened.stdout and '"allow_clean": true' in opened.stdout


def test_allow_clean_beside_a_default_tier_is_refused(aim, unkeyed_tiers):
    result = aim(
        "serve", str(DEMO / "classifier"), "--profiles", str(unkeyed_tiers), "--default-profile", "gold",
        "--allow-clean", "--dry-run",
    )  # fmt: skip
    assert_user_error(result, 2, "--allow-clean and a default tier ('gold') exclude each other")


def test_a_busy_port_is_one_line_before_anything_starts():
    from aim_cli.ports import check_port_free

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(AimError, match=f"port {port} on 127.0.0.1 is in use by another server"):
            check_port_free("127.0.0.1", port)
        with pytest.raises(AimError, match="in use"):
            check_port_free("0.0.0.0", port)  # all addresses include the held one
    check_port_free("127.0.0.1", port)  # released: free again
    with pytest.raises(AimError, match="cannot listen"):
        check_port_free("192.0.2.1", port)  # TEST-NET: not an address of this machine


@pytest.mark.parametrize(
    ("address", "endpoint"),
    [
        ("10.0.0.1:6379", ("10.0.0.1", 6379)),
        ("ray://head:10001", ("head", 10001)),
        ("ray://head", ("head", 10001)),
        ("head", ("head", 6379)),
        ("[::1]:7000", ("::1", 7000)),
        ("auto", None),
        ("", None),
    ],
)
def test_ray_addresses_name_an_endpoint(address, endpoint):
    from aim_cli.engines.ray_data import cluster_endpoint

    assert cluster_endpoint(address) == endpoint


def test_an_unreachable_cluster_is_one_line_within_the_bound(monkeypatch):
    """A closed port answers at once; a silent address waits AIM_RAY_CONNECT_TIMEOUT_S, not forever."""
    from aim_cli.engines.ray_data import check_reachable, cluster_endpoint

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(AimError, match=f"cannot reach the Ray cluster at 127.0.0.1:{closed} \\(--address\\)"):
            check_reachable(f"127.0.0.1:{closed}")
    monkeypatch.setenv("AIM_RAY_CONNECT_TIMEOUT_S", "1")
    monkeypatch.setenv("RAY_ADDRESS", "ray://192.0.2.1:10001")  # TEST-NET: nothing answers
    started = time.monotonic()
    with pytest.raises(AimError, match=r"\(RAY_ADDRESS\) within 1 s"):
        check_reachable(None)
    assert time.monotonic() - started < 5
    with pytest.raises(AimError, match="expected HOST:PORT"):
        cluster_endpoint("head:port")


# --- the vLLM path without vLLM: its admission call and aim serve's port check --------------------------


@pytest.mark.parametrize(
    ("default", "extra", "fragment"),
    [
        ("free-tier", {"aim_sigma": 0}, "aim_sigma: tier 'free-tier' (this server's default) fixes its own sigma"),
        ("free-tier", {"aim_sigma": -0.0}, "fixes its own sigma"),
        ("free-tier", {"aim_sigma": 1e-300}, "fixes its own sigma"),
        ("free-tier", {"aim_sigma": 0, "aim_keyed": 1}, "fixes its own"),
        ("free-tier", {"AIM_SIGMA": 0}, "write it aim_sigma"),
        ("free-tier", {"aim_profile": "../free-tier"}, "unknown tier"),
        ("", None, "names no tier"),
        ("", {"aim_sigma": 2.0}, "aim_sigma: this server serves only its tiers"),
        ("", {"aim_focus": "7"}, "aim_focus: this server serves only its tiers"),
    ],
)
def test_vllm_admission_under_aim_serves_environment(default, extra, fragment):
    """What the plugin's validate_params runs (serving.admit, serving.server_policy) on aim serve's environment."""
    from aim_cli import serving
    from aim_cli.errors import ProfileError

    environ = {
        serving.PROFILES_ENV: str(REPO / "profiles"),
        serving.DEFAULT_ENV: default,
        "AIM_ALLOW_AD_HOC_TIERS": "0",
        "AIM_ALLOW_CLEAN": "0",
        serving.KEY_ENV: "secret",
    }
    with pytest.raises(ProfileError) as caught:
        serving.admit(extra, serving.server_policy(environ))
    assert fragment in str(caught.value)


def test_vllm_path_refuses_a_busy_port_before_vllm_starts(aim, tmp_path):
    """A stand-in `vllm` package makes `aim serve` take the vLLM path; the port check comes before the exec."""
    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "__init__.py").write_text("")
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = aim(
            "serve", "my/model", "--profiles", str(REPO / "profiles"), "--", "--port", str(port),
            env={"PYTHONPATH": f"{tmp_path}:{REPO}", "AIM_NOISE_KEY": "s"}, timeout=120,
        )  # fmt: skip
    assert_user_error(result, 2, f"port {port} on all addresses is in use by another server")
    assert "ready" not in result.stderr
