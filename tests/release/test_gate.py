"""The gate's like-with-like rules and the live limits it fixes, on registry-shaped versions.

The versions here are plain :class:`registry.aliases.Resolved` records with the tags the export stage
writes; the end-to-end path (export -> register -> release) runs in ``test_release_live.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from common import scored_split
from common.params import ReleaseConfig
from registry.aliases import Resolved
from release import gate, limits

TEN = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CFG = ReleaseConfig()


def version(n: int, accuracy: float, digest: str | None, precision: dict | None = None) -> Resolved:
    tags = {"parity_passed": "true", "test_accuracy": f"{accuracy:.4f}", "test_images": "1000"}
    if digest:
        tags |= {"test_digest": digest, "test_class_precision": json.dumps(precision or {})}
    return Resolved("m-fp32", n, None, "runs:/x", tags)


def test_another_class_list_is_refused_first_and_cannot_be_forced():
    """The issue's case: a three-class model landed in the ten-class registered model."""
    result = gate.offline(
        version(2, 0.99, "a" * 16), version(1, 0.5, "a" * 16), CFG, ("bird", "cat", "dog"), TEN
    )
    assert [c.name for c in result.checks] == ["classes"]
    (check,) = result.unforceable
    assert "['bird', 'cat', 'dog']" in check.detail and "'airplane'" in check.detail and not check.forceable
    # the same list in another order relabels every answer just the same
    swapped = (TEN[1], TEN[0], *TEN[2:])
    assert not gate.offline(version(2, 0.9, None), version(1, 0.9, None), CFG, swapped, TEN)["classes"].passed


def test_accuracy_compares_only_figures_measured_on_the_same_images():
    same = gate.offline(version(2, 0.930, "a" * 16), version(1, 0.932, "a" * 16), CFG, TEN, TEN)
    assert same["accuracy"].passed and "same 1000 images" in same["accuracy"].detail
    assert same.baseline.accuracy == 0.932
    worse = gate.offline(version(2, 0.900, "a" * 16), version(1, 0.932, "a" * 16), CFG, TEN, TEN)
    assert not worse["accuracy"].passed and worse["accuracy"].forceable and not worse.unforceable
    # other data: not compared (the 0.6156 on 900 images vs 0.7030 on 5000), unless scored
    other = gate.offline(version(2, 0.99, "b" * 16), version(1, 0.5, "a" * 16), CFG, TEN, TEN)
    assert not other["accuracy"].passed and "other data" in other["accuracy"].detail
    asked = []

    def scorer(digest: str, images: int):
        asked.append((digest, images))
        return limits.Baseline(0.95, images, {}, "scored now")

    scored = gate.offline(version(2, 0.99, "b" * 16), version(1, 0.5, "a" * 16), CFG, TEN, TEN, scorer)
    assert asked == [("b" * 16, 1000)] and scored["accuracy"].passed and scored.baseline.accuracy == 0.95
    unscorable = gate.offline(
        version(2, 0.99, "b" * 16), version(1, 0.5, "a" * 16), CFG, TEN, TEN, lambda d, n: "no data here"
    )
    assert not unscorable["accuracy"].passed and "no data here" in unscorable["accuracy"].detail
    undated = gate.offline(version(2, 0.99, None), version(1, 0.5, None), CFG, TEN, TEN)
    assert not undated["accuracy"].passed and "test_digest" in undated["accuracy"].detail


def test_live_limits_come_from_the_gates_requirement_never_from_the_candidate():
    """Production 0.932 with margin 0.005: any candidate the gate would pass agrees >= 0.859 - slack."""
    base = limits.Baseline(0.932, 5000, {"bird": 0.90, "cat": 0.80}, "same")
    derived = limits.derive(base, TEN, CFG)
    assert derived.agreement == pytest.approx(0.932 + 0.927 - 1 - CFG.agreement_slack)
    assert derived.class_agreement["bird"] == pytest.approx(
        2 * 0.90 - CFG.class_margin - 1 - CFG.agreement_slack
    )
    assert derived.class_agreement["cat"] == pytest.approx(
        2 * 0.80 - CFG.class_margin - 1 - CFG.agreement_slack
    )
    assert "ship" not in derived.class_agreement  # unknown precision: no limit, rather than the average
    # the swap: measured overall agreement 0.77-0.79 now lies below the limit (0.839)
    assert derived.agreement > 0.80
    assert limits.Limits.from_dict(derived.to_dict()) == derived
    fixed = limits.derive(None, TEN, ReleaseConfig(min_agreement=0.9, min_class_agreement=0.8))
    assert fixed.agreement == 0.9 and set(fixed.class_agreement.values()) == {0.8}


def test_a_good_candidate_stays_above_the_derived_limits_and_a_swap_falls_below_on_its_classes():
    """Simulated on labels: production 93 % right, a candidate that keeps production's accuracy
    (errors of its own), and the same candidate with two classes exchanged."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 10, 20_000)
    production = np.where(rng.random(truth.size) < 0.93, truth, rng.integers(0, 10, truth.size))
    good = np.where(rng.random(truth.size) < 0.93, truth, rng.integers(0, 10, truth.size))
    swap = good.copy()
    swap[good == 2], swap[good == 9] = 9, 2
    base = limits.Baseline(
        float(np.mean(production == truth)),
        truth.size,
        scored_split.class_precision(production, truth, TEN),
        "",
    )
    derived = limits.derive(base, TEN, CFG)
    for name, candidate, should_pass in (("good", good, True), ("swap", swap, False)):
        per_class = {TEN[c]: float(np.mean(candidate[production == c] == c)) for c in range(10)}
        below = [c for c, v in per_class.items() if v < derived.class_agreement[c]]
        assert (not below) == should_pass, (name, below, per_class)
    assert set(below) == {"bird", "truck"}


def test_production_is_scored_on_the_candidates_rows_when_the_digests_differ(
    small_export, small_prepared, monkeypatch, tmp_path
):
    """A candidate scored on another part of the test split: the gate finds its rows again in the
    prepared folder (checked by digest), runs production's registered ONNX file on them, and keeps the
    figure on production's version; a prepared folder of other data is refused, saying so."""
    import uuid

    import onnxruntime as ort

    from common.params import RegistryConfig
    from registry import aliases, store
    from release.baseline import ProductionScorer
    from tests.conftest import add_version

    folder, uri = small_export
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = RegistryConfig(model_prefix=f"g{uuid.uuid4().hex[:8]}")
    store.register_manifest(folder / "manifest.json", cfg)
    name = cfg.registered_name("fp32")
    images, labels = scored_split.load_rows(small_prepared, 10)
    digest = scored_split.digest(images, labels, TEN)
    candidate = add_version(name, test_digest=digest, test_images="10", test_accuracy="0.5000")
    production = aliases.resolve(name, version=1)
    assert production.tags["test_digest"] != digest
    scorer = ProductionScorer(name, 1, small_prepared, tmp_path / "cache")
    result = gate.offline(aliases.resolve(name, version=candidate), production, CFG, TEN, TEN, scorer)

    session = ort.InferenceSession(str(folder / "model.fp32.onnx"))
    x = scored_split.normalise(images, (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616))
    expected = float(np.mean(session.run(None, {"input": x})[0].argmax(1) == labels))
    assert result.baseline.accuracy == pytest.approx(expected, abs=1e-4) and result.baseline.images == 10
    assert "scored now" in result.baseline.basis and "same 10 images" in result["accuracy"].detail
    kept = json.loads(aliases.resolve(name, version=1).tags[f"test_score.{digest}"])
    assert kept["accuracy"] == pytest.approx(expected, abs=1e-4)
    again = scorer(digest, 10)  # the kept figure, not a second run
    assert again.accuracy == kept["accuracy"] and "earlier" in again.basis
    elsewhere = ProductionScorer(name, 1, tmp_path / "nothing", tmp_path / "cache")("0" * 16, 10)
    assert isinstance(elsewhere, str) and "no prepared test split" in elsewhere
    mismatch = ProductionScorer(name, 1, small_prepared, tmp_path / "cache")("0" * 16, 10)
    assert isinstance(mismatch, str) and "not the one the candidate was scored on" in mismatch
