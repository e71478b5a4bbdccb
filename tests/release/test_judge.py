"""The release's arithmetic and its record, without a server: intervals, chance levels, round trips."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from common.params import ReleaseConfig, load_params
from registry.release_record import Owner, ReleaseRecord
from registry.tags import TagError
from release.judge import Figure, Verdict, interval, psi_chance
from tests.prerequisites import ROOT


def test_exact_interval_covers_the_truth_narrows_with_samples_and_is_honest_on_a_handful():
    low, high = interval(90, 100, 3.0)
    assert low < 0.9 < high
    assert interval(900, 1000, 3.0)[1] - interval(900, 1000, 3.0)[0] < high - low
    assert interval(0, 0, 3.0) == (0.0, 1.0)
    assert interval(0, 50, 3.0)[0] == 0.0 and interval(50, 50, 3.0)[1] == 1.0
    # 0 agreeing of 2: a candidate agreeing 90 % does that 1 % of the time, so it is no 3-sigma breach;
    # 0 of 5 (1e-5) is.
    assert interval(0, 2, 3.0)[1] > 0.9 > interval(0, 5, 3.0)[1]


MIXES = {  # class mixes a served model's predictions take: even, skewed, with rare and empty classes
    "even-10": np.full(10, 0.1),
    "forty-images": np.array([8, 6, 6, 5, 4, 4, 3, 2, 1, 1, 0]) / 40,
    "one-dominant": np.array([0.9, 0.05, 0.05]),
    "two-classes": np.array([0.7, 0.3]),
}


@pytest.mark.parametrize(
    ("mix", "n_candidate", "n_production"),
    [("even-10", 20, 300), ("even-10", 42, 2300), ("even-10", 200, 2000), ("forty-images", 42, 2300),
     ("forty-images", 500, 500), ("one-dominant", 30, 3000), ("two-classes", 25, 100)],
)  # fmt: skip
def test_psi_chance_level_holds_equal_mixes_at_their_tail_whatever_the_mix_and_the_sample_sizes(
    mix, n_candidate, n_production
):
    """Where candidate and production predict one class mix, the judge's 3-sigma chance level is
    exceeded about 0.13 % of the time, at any sample size: the rate is each level's exceedance under
    the true null (200,000 simulated pairs), averaged over levels derived from 20 pairs of samples.
    The bound is 3x that: the 0.13 % quantile of 20,000 draws rests on about 27 of them (+-20 %), and
    where a class expects one or two predictions PSI takes few values, so one more of them beyond a
    level moves its rate by tenths of a percent (over seeds 0-9 these cases averaged at most 0.33 %).
    The chi-square formula this replaced was exceeded 1.2 % to 41 % of the time in these cases."""
    from scipy.stats import norm

    from monitoring.drift import psi_rows

    rng = np.random.default_rng(7)
    shares = MIXES[mix]
    cand = rng.multinomial(n_candidate, shares, size=200_000).astype(float)
    prod = rng.multinomial(n_production, shares, size=200_000)
    null = np.sort(psi_rows(cand, prod / n_production))
    rates = []
    for c, p in zip(cand[:20], prod[:20], strict=True):
        (level,) = psi_chance(dict(enumerate(c)), dict(enumerate(p)), (3.0,))
        rates.append(1.0 - np.searchsorted(null, level, side="right") / null.size)
    assert np.mean(rates) <= 3 * norm.sf(3.0), (mix, rates)


def test_a_shifted_class_mix_scores_above_chance_and_the_limit():
    """A model that calls 40 % of the images one class (PSI 0.5 against an even mix) breaches on
    200 predictions: the simulated chance level does not blind the judge."""
    from monitoring.drift import psi

    rng = np.random.default_rng(0)
    even, shifted = np.full(10, 0.1), np.array([0.4] + [0.6 / 9] * 9)
    breaches = 0
    for _ in range(20):
        cand, prod = rng.multinomial(200, shifted), rng.multinomial(2000, even)
        value = psi(dict(enumerate(cand)), dict(enumerate(prod / prod.sum())))
        (level,) = psi_chance(dict(enumerate(cand)), dict(enumerate(prod)), (3.0,))
        breaches += value > 0.1 + level
    assert breaches >= 18


def test_a_step_passes_only_with_enough_images_and_every_figure_within():
    ok = Figure("error_ratio", 0.0, 0.01, breached=False, within=True)
    pending = Figure("class_psi", None, 0.1, breached=False, within=False)
    assert Verdict(50, (ok,)).passes(20) and not Verdict(10, (ok,)).passes(20)
    assert not Verdict(50, (ok, pending)).passes(20)
    breach = Figure("shadow_agreement", 0.1, 0.9, breached=True, within=False)
    verdict = Verdict(50, (ok, breach))
    assert verdict.breaches == [breach] and not verdict.passes(20)
    assert verdict.metrics()["shadow_agreement_limit"] == 0.9


def test_release_record_round_trips_and_rejects_a_tampered_tag():
    record = ReleaseRecord("m-fp32", 3, "m-fp32", 2, "gate", started_at=1.0).moved(
        "shadow", shadow_fraction=0.5
    )
    again = ReleaseRecord.from_tag(record.to_tag(), "m-fp32")
    assert again == record and again.active and again.label == "shadow"
    assert [e["label"] for e in again.log] == ["shadow"] and again.owner.pid == os.getpid()
    canary = again.moved("canary", step_index=1, canary_weight=0.1)
    assert canary.label == "canary 10%" and [e["from"] for e in canary.log] == ["gate", "shadow"]
    assert not canary.moved("rolled_back").active
    for text in ("{", '{"step": "shadow"}', record.to_tag().replace('"shadow"', '"party"')):
        with pytest.raises(TagError, match="release"):
            ReleaseRecord.from_tag(text, "m-fp32")


def test_an_owner_is_alive_only_while_its_process_runs_and_beats():
    assert Owner.me().alive(60)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    gone = Owner(Owner.me().host, int(dead.stdout), Owner.me().heartbeat)
    assert not gone.alive(60)
    assert not Owner("elsewhere", 1, 0.0).alive(60)  # another host: only the heartbeat counts


def test_release_settings_come_from_params_yaml_and_are_checked():
    cfg = load_params(ROOT / "params.yaml").release
    assert cfg.canary_weights[-1] == 1.0 and cfg.min_agreement is None
    for bad in ({"canary_weights": (0.5, 0.1, 1.0)}, {"canary_weights": (0.1, 0.5)}, {"shadow_fraction": 2}):
        with pytest.raises(ValueError, match="release"):
            ReleaseConfig(**bad)


def test_latency_reads_an_upper_bound_of_productions_p99_and_counts_only_certainly_slow_requests():
    from release import latency

    edges = [1.0, 2.0, 5.0, 10.0, 20.0, float("inf")]
    production = list(zip(edges, [0, 50, 95, 99, 100, 100], strict=True))
    assert latency.bucket_edge(production, 0.99) == 10.0  # the p99 lies in (5, 10]: read as 10
    assert latency.quantile(production, 0.5) == pytest.approx(2.0)  # interpolated like PromQL
    candidate = list(zip(edges, [0, 0, 10, 20, 60, 100], strict=True))
    assert latency.slower_than(candidate, 10.0) == 80  # above the edge at the limit
    assert latency.slower_than(candidate, 12.0) == 40  # above the first edge past the limit (20)
    assert latency.total([]) == 0 and latency.quantile([], 0.99) is None


def test_per_class_tests_share_one_family_wise_error():
    from release.judge import class_z

    assert class_z(3.0, 1) == pytest.approx(3.0)
    assert 3.0 < class_z(3.0, 10) < 3.8


def test_the_probes_paired_bound_is_tight_where_the_versions_agree_and_honest_where_they_do_not():
    from release.probe import paired_bound

    rng = np.random.default_rng(0)
    production = rng.random(1000) < 0.93
    same = paired_bound(production, production, 3.0)
    assert same[0] == 0.0 and 0 < same[1] < 0.02  # no disagreement: doubt of about one image in n
    worse = production.copy()
    worse[np.flatnonzero(production)[:31]] = False  # 3.1 points worse, as the trials' `worse` candidate
    d, upper = paired_bound(production, worse, 3.0)
    assert d == pytest.approx(-0.031) and upper < -0.005  # breaches a 0.5-point margin at 3 sigma
    # a candidate that fixes as many errors as it makes is not worse, however much it disagrees
    churn = production.copy()
    churn[np.flatnonzero(production)[:40]] = False
    churn[np.flatnonzero(~production)[:40]] = True
    d, upper = paired_bound(production, churn, 3.0)
    assert d == 0.0 and upper > 0


def test_a_breach_without_a_value_is_still_said_in_one_line():
    """The probe's figure when the candidate failed its requests has no value; the verdict says so."""
    from release.controller import _figures

    failed = Figure(
        "probe_accuracy_difference", None, -0.005, breached=True, within=False, detail="it failed"
    )
    assert _figures(Verdict(3, (failed,))) == "probe_accuracy_difference - beyond -0.005 (it failed)"


def test_a_probe_a_few_images_behind_by_chance_does_not_hold_the_step():
    """Measured once: a point estimate just below the limit cannot be settled by waiting."""
    from release.probe import ProbeResult

    near = ProbeResult(1000, 0.932, 0.926, -0.006, 0.015).figure(0.005)
    assert near.within and not near.breached
    far = ProbeResult(1000, 0.932, 0.900, -0.032, -0.008).figure(0.005)
    assert far.breached and not far.within
