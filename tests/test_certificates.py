"""Certificates: the interval holds what it says (coverage over random splits), the schema is strict,
an edited profile is reported, and the serving start-up check refuses another model."""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aim_cli.calibration.certify import (
    Estimate,
    bernoulli_estimate,
    classification_estimate,
    delta_estimate,
    image_counts,
    profile_modulation,
)
from aim_cli.calibration.classify import collect_logits, dataset_label_ids, expected_correct
from aim_cli.calibration.datasets import demo_classification_set, demo_segmentation_set
from aim_cli.certificates import (
    Certificate,
    CertificateWarning,
    Interval,
    check_served_tiers,
    directory_fingerprint,
    network_fingerprint,
    settings_hash,
)
from aim_cli.errors import AimError, ProfileError
from aim_cli.metrics import IGNORE_INDEX
from aim_cli.models.registry import load_model
from aim_cli.modulation import Modulation, SeededNoise, modulate
from aim_cli.profile import Profile

CONFIDENCE = 0.95
SPLITS = 60  # >= 40 seeded random splits into calibration and held-out halves
CLASSIFY_IMAGES = 600
SEGMENT_IMAGES = 64


def binomial_floor(trials: int, p: float, alpha: float = 0.01) -> int:
    """The smallest count of hits a true coverage of `p` reaches with probability >= 1 - alpha (one-sided)."""
    cumulative = 0.0
    for k in range(trials + 1):
        cumulative += math.comb(trials, k) * p**k * (1 - p) ** (trials - k)
        if cumulative > alpha:
            return k
    return trials


def nearest_on_grid(grid: np.ndarray, curve: np.ndarray, target: float) -> int:
    """The grid point whose calibration-half metric is closest to the target (the split's certified sigma)."""
    return int(np.argmin(np.abs(curve - target)))


@pytest.fixture(scope="module")
def classify_logits() -> tuple[torch.Tensor, torch.Tensor]:
    """Clean demo-classifier logits, computed once for every split."""
    torch.manual_seed(0)
    dataset = demo_classification_set(CLASSIFY_IMAGES)
    classifier = load_model("classify", None, device=torch.device("cpu"))
    cached = collect_logits(classifier, dataset.items, dataset_label_ids(dataset, classifier.labels), 200)
    return cached.logits, cached.labels


def test_classification_interval_covers_held_out_accuracy(classify_logits) -> None:
    """Over SPLITS random halvings, the held-out accuracy at the certified sigma (fresh noise) lies inside."""
    logits, labels = classify_logits
    target = 0.6
    grid = np.geomspace(1.5, 4.5, 48)
    wins = torch.stack([expected_correct(logits, labels, float(s)) for s in grid])  # (G, N), exact, once
    half = logits.shape[0] // 2
    hits = 0
    for split in range(SPLITS):
        order = torch.randperm(logits.shape[0], generator=torch.Generator().manual_seed(split))
        cal, held = order[:half], order[half:]
        sigma = float(grid[nearest_on_grid(grid, wins[:, cal].mean(dim=1).numpy(), target)])
        estimate = classification_estimate(logits[cal], labels[cal], Profile(sigma=sigma), None, 1)
        low, high = estimate.interval(CONFIDENCE, sample_size=len(held))
        noisy = modulate(logits[held], Modulation(sigma=sigma), SeededNoise(10_000 + split))
        measured = float((noisy.argmax(dim=1) == labels[held]).double().mean())
        hits += low <= measured <= high
    floor = binomial_floor(SPLITS, CONFIDENCE)
    print(f"classification coverage: {hits}/{SPLITS} = {hits / SPLITS:.3f} (floor {floor} at 95%)")
    assert hits >= floor, f"coverage {hits}/{SPLITS} below the binomial floor {floor} for {CONFIDENCE:.0%}"


@pytest.fixture(scope="module")
def segment_pixels() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each demo scene's scored upsampled pixel logits (P, C) and truth (P,), from one forward pass."""
    segmenter = load_model("segment", None, device=torch.device("cpu"))
    dataset = demo_segmentation_set(SEGMENT_IMAGES)
    images = [image for _, image, _ in dataset.scenes]
    with torch.inference_mode():
        low = segmenter.logits(images)
    out = []
    for i, (_, image, mask) in enumerate(dataset.scenes):
        up = F.interpolate(low[i : i + 1], size=(image.height, image.width), mode="bilinear", align_corners=False)
        pixels = up[0].permute(1, 2, 0).reshape(-1, low.shape[1]).clone()
        truth = torch.from_numpy(np.asarray(mask).astype(np.int64)).reshape(-1)
        keep = truth != IGNORE_INDEX
        out.append((pixels[keep], truth[keep]))
    return out


SEGMENT_GRID = np.geomspace(2.0, 12.0, 10)  # ratio 1.22 between points: targets land near one; half the cost of 20


@pytest.fixture(scope="module")
def segment_counts(segment_pixels) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per image and grid sigma: exact expected confusion counts and two noisy ones (production image_counts), once."""
    classes = segment_pixels[0][0].shape[1]
    counts, noisy = [], []
    for g, sigma in enumerate(SEGMENT_GRID):
        profile = Profile(sigma=float(sigma))
        modulation = profile_modulation(profile, None, 1)
        noise = SeededNoise(g)
        per_image = [image_counts(p, t, profile, modulation, noise, classes, None, 2) for p, t in segment_pixels]
        counts.append(torch.stack([c for c, _, _ in per_image]))
        noisy.append(torch.stack([torch.stack([r[k] for _, r, _ in per_image]) for k in range(2)]))
    return counts, noisy


@pytest.mark.parametrize(("metric", "target"), [("miou", 0.5), ("pixel_accuracy", 0.6)])
def test_segmentation_interval_covers_held_out_metric(
    segment_pixels, segment_counts, metric: str, target: float
) -> None:
    """Images as units: per-image confusion counts at each grid sigma, computed once; SPLITS random halvings."""
    from aim_cli.calibration.certify import MATRIX_METRICS

    classes = segment_pixels[0][0].shape[1]
    grid = SEGMENT_GRID
    counts, noisy = segment_counts
    function = MATRIX_METRICS[metric]
    half = len(segment_pixels) // 2
    hits = 0
    for split in range(SPLITS):
        order = torch.randperm(len(segment_pixels), generator=torch.Generator().manual_seed(split))
        cal, held = order[:half], order[half:]
        present = counts[0][cal].sum(dim=(0, 2)) > 0
        curve = np.array([float(function(c[cal].sum(dim=0), present, None)) for c in counts])
        g = nearest_on_grid(grid, curve, target)
        estimate = delta_estimate(counts[g][cal], noisy[g][:, cal], metric, None, "exact")
        low, high = estimate.interval(CONFIDENCE, sample_size=len(held))
        noise = SeededNoise(50_000 + split)
        matrix = torch.zeros(classes, classes, dtype=torch.float64)
        for i in held.tolist():
            pixels, truth = segment_pixels[i]
            decided = modulate(pixels, Modulation(sigma=float(grid[g])), noise).argmax(dim=1)
            matrix += torch.bincount(truth * classes + decided, minlength=classes * classes).reshape(classes, -1)
        measured = float(function(matrix, matrix.sum(dim=1) > 0, None))
        hits += low <= measured <= high
    floor = binomial_floor(SPLITS, CONFIDENCE)
    print(f"segmentation {metric} coverage: {hits}/{SPLITS} = {hits / SPLITS:.3f} (floor {floor} at 95%)")
    assert hits >= floor, f"coverage {hits}/{SPLITS} below the binomial floor {floor} for {CONFIDENCE:.0%}"


def test_bernoulli_estimate_is_the_design_formula() -> None:
    """p +- z sqrt(Var_i(w_i) / n_cal + p (1 - p) / n), with the unbiased variance of the w_i."""
    w = torch.tensor([0.1, 0.5, 0.9, 1.0, 0.0, 0.7])
    estimate = bernoulli_estimate(w, "exact")
    p = float(w.double().mean())
    assert estimate.predicted == pytest.approx(p)
    assert estimate.estimate_variance == pytest.approx(float(w.double().var()) / 6)
    low, high = estimate.interval(0.95, sample_size=100)
    half = 1.959964 * math.sqrt(float(w.double().var()) / 6 + p * (1 - p) / 100)
    assert (low, high) == pytest.approx((p - half, p + half), abs=1e-6)


def test_delta_estimate_matches_pixel_accuracy_by_hand() -> None:
    """Pixel accuracy's linearisation is (correct_i - p pixels_i) / mean pixels: checked against autograd."""
    expected = torch.tensor([[[8.0, 2.0], [1.0, 9.0]], [[5.0, 5.0], [0.0, 10.0]], [[10.0, 0.0], [2.0, 8.0]]])
    noisy = torch.stack([expected, expected])  # no noise: the unit variance is the spread of the images alone
    estimate = delta_estimate(expected, noisy, "pixel_accuracy", None, "exact")
    correct = expected.diagonal(dim1=1, dim2=2).sum(dim=1)
    p = float(correct.sum() / expected.sum())
    by_hand = (correct - p * 20.0) / 20.0
    assert estimate.predicted == pytest.approx(p)
    assert estimate.unit_variance == pytest.approx(float(by_hand.var()))
    assert estimate.estimate_variance == pytest.approx(float(by_hand.var()) / 3)


def _certificate(**changes: object) -> Certificate:
    """A valid certificate for the schema tests."""
    base = Certificate(
        aim_version="0.1.0",
        created="2026-12-07T21:00:00Z",
        task="classify",
        model_spec="demo",
        model_fingerprint="sha256:" + "a" * 64,
        data_spec="demo",
        data_fingerprint="sha256:" + "b" * 64,
        items=500,
        metric="accuracy",
        target=0.6,
        method="exact",
        predicted=0.601,
        interval=Interval(0.55, 0.65, 0.95, 500, "meaning"),
        settings_hash=settings_hash(Profile(sigma=2.5).to_dict()),
        estimate_variance=1e-5,
        unit_variance=0.24,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_certificate_round_trips_through_its_mapping() -> None:
    """from_mapping(to_mapping()) is the identity, and the id ignores the creation time."""
    cert = _certificate()
    again = Certificate.from_mapping(cert.to_mapping(), "t.yaml")
    assert again == cert
    assert replace(cert, created="2030-01-01T00:00:00Z").id == cert.id


def _mutate(mapping: dict, path: str, value: object) -> dict:
    """A copy of a nested mapping with one key set (value ...: deleted)."""
    import copy

    out = copy.deepcopy(mapping)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return out


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        ("extra", 1, "certificate.extra"),
        ("model.extra", 1, "certificate.model.extra"),
        ("model.fingerprint", "md5:abc", "certificate.model.fingerprint"),
        ("metric", "f1", "certificate.metric"),
        ("method", "guess", "certificate.method"),
        ("predicted", 1.5, "certificate.predicted"),
        ("predicted", True, "certificate.predicted"),
        ("predicted", 0.9, "certificate.interval"),  # outside [low, high]
        ("interval.confidence", 1.0, "certificate.interval.confidence"),
        ("interval.sample_size", 0, "certificate.interval.sample_size"),
        ("interval.low", ..., "certificate.interval.low"),
        ("data.items", "500", "certificate.data.items"),
        ("settings_hash", ..., "certificate.settings_hash"),
        ("task", "translate", "certificate.task"),
        ("variance.unit", -1.0, "certificate.variance.unit"),
        ("focus", {"class": "cat"}, "certificate.focus"),  # a focus class on an accuracy certificate
    ],
)
def test_certificate_schema_is_strict(path: str, value: object, fragment: str) -> None:
    """Each bad field is one ProfileError naming the file and the key."""
    mapping = _mutate(_certificate().to_mapping(), path, value)
    with pytest.raises(ProfileError) as caught:
        Certificate.from_mapping(mapping, "tier.yaml")
    assert "tier.yaml" in str(caught.value) and fragment in str(caught.value)


def _write_profile(tmp_path, sigma_in_file: float, certified_sigma: float = 2.5):
    """A certified profile file whose utility sigma may differ from the one certified."""
    import yaml

    cert = _certificate(settings_hash=settings_hash(Profile(sigma=certified_sigma).to_dict()))
    path = tmp_path / "tier.yaml"
    document = {"version": 1, "name": "tier", "utility": {"sigma": sigma_in_file}, "certificate": cert.to_mapping()}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_certified_profile_loads_with_its_certificate(tmp_path) -> None:
    """A profile whose settings match its certificate loads quietly; 2.50 and 2.5 are the same setting."""
    path = _write_profile(tmp_path, 2.50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        profile = Profile.load(path)
    assert profile.certificate is not None and profile.certificate_problem is None
    assert Profile.from_dict(profile.to_dict()).certificate == profile.certificate


def test_profile_edited_after_certification_warns_on_load(tmp_path) -> None:
    """Changing the sigma by hand breaks the settings hash: a CertificateWarning names the file."""
    path = _write_profile(tmp_path, 3.0)
    with pytest.warns(CertificateWarning, match="edited after certification"):
        profile = Profile.load(path)
    assert profile.certificate_problem is not None


def test_overrides_drop_the_certificate(tmp_path) -> None:
    """--sigma on a certified profile makes another tier: it no longer carries the certificate."""
    profile = Profile.load(_write_profile(tmp_path, 2.5))
    assert profile.with_overrides(sigma=2.5).certificate is not None  # the same settings
    assert profile.with_overrides(sigma=3.0).certificate is None


def test_network_fingerprint_sees_every_weight_and_label() -> None:
    """Equal content, equal fingerprint; one changed weight or label, another one."""
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    base = network_fingerprint(net, ["a", "b", "c"])
    twin = torch.nn.Linear(4, 3)
    twin.load_state_dict(net.state_dict())
    assert network_fingerprint(twin, ["a", "b", "c"]) == base
    assert network_fingerprint(net, ["a", "b", "x"]) != base
    with torch.no_grad():
        twin.weight[0, 0] += 1e-6
    assert network_fingerprint(twin, ["a", "b", "c"]) != base


def test_directory_fingerprint_reads_weights_and_config(tmp_path) -> None:
    """A language model folder: weights and config count, a README does not."""
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"1234")
    base = directory_fingerprint(tmp_path)
    (tmp_path / "README.md").write_text("notes")
    assert directory_fingerprint(tmp_path) == base
    (tmp_path / "model.safetensors").write_bytes(b"1235")
    assert directory_fingerprint(tmp_path) != base


def test_serving_refuses_a_tier_certified_on_another_model() -> None:
    """The start-up check: a mismatch is refused, the flag turns it into a warning, uncertified tiers pass."""
    cert = _certificate()
    tiers = {"tier-60": cert, "free": None}
    assert check_served_tiers(tiers, cert.model_fingerprint, False, "demo") == []
    with pytest.raises(AimError, match="tier-60") as caught:
        check_served_tiers(tiers, "sha256:" + "c" * 64, False, "demo")
    assert "--allow-uncertified-model" in str(caught.value)
    notes = check_served_tiers(tiers, "sha256:" + "c" * 64, True, "demo")
    assert len(notes) == 1 and "tier-60" in notes[0] and "--allow-uncertified-model" in notes[0]


def test_estimate_interval_clips_to_fractions() -> None:
    """A metric near 1 keeps its interval inside [0, 1]."""
    estimate = Estimate(0.999, 1e-4, 0.001, 10, "exact")
    low, high = estimate.interval(0.95)
    assert 0.0 <= low <= 0.999 <= high <= 1.0
