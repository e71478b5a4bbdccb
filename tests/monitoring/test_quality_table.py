"""The label-free estimate of the reference WRN-28-10 on shifted test sets, served by tritonserver.

``make test-full`` only (about ten minutes on 2 cores): the export stage calibrates the int8 form's
reference on half of the mirror's test split, and ``benchmarks.quality_table`` sends 200
class-balanced images of the other half per set, clean and corrupted six ways at three severities,
through the public ``cifar10`` endpoint. What must hold, and why it holds on any x86-64 CPU (the
estimate is arithmetic on the answers; a CPU changes int8 logits in their last bits, not the
answers' confidence ranks):

* **the cap is an upper bound.** The sets are class-balanced like the reference's label mix, so at
  most ``sum_c min(p_c, q_c)`` of the answers can be right: the class-mix bound is never below the
  true accuracy, and capping ATC by it never increases ATC's error;
* **reliable means close.** Where no input statistic drifts, the estimate is within 5 points (the
  upper end of the "few points" ATC's authors report on CIFAR-10 shifts, Garg et al. 2022) plus
  three binomial standard deviations of a 200-image accuracy (at most 10.6 points);
* **strong shifts alert, clean stays quiet.** Every strong corruption raises an alert condition
  (accuracy or input drift); the clean set raises none.
"""

from __future__ import annotations

import math

import pytest

from benchmarks import quality_table

pytestmark = [pytest.mark.full, pytest.mark.triton, pytest.mark.data]
IMAGES = 200
PUBLISHED_ERROR = 0.05


@pytest.fixture(scope="module")
def rows(prepared_mirror, reference_weights, tmp_path_factory) -> list[dict]:
    workdir = tmp_path_factory.mktemp("quality-table")
    return quality_table.run(prepared_mirror, reference_weights, "int8", IMAGES, seed=0, workdir=workdir)


def test_the_class_mix_cap_bounds_the_true_accuracy_and_only_ever_helps(rows):
    for r in rows:
        assert r["class_mix_bound"] >= r["true"] - 1e-9, r
    shifted = [r for r in rows if r["set"] != "clean"]
    served = sum(abs(r["estimate"] - r["true"]) for r in shifted)
    plain = sum(abs(r["atc"] - r["true"]) for r in shifted)
    assert served <= plain + 1e-9
    print(quality_table.render(rows))


def test_where_no_input_drifts_the_estimate_is_within_the_published_error_plus_sampling(rows):
    bound = PUBLISHED_ERROR + 3 * math.sqrt(0.25 / IMAGES)
    reliable = [r for r in rows if r["reliable"]]
    assert any(r["set"] == "clean" for r in reliable), "the clean set itself drifts: the reference is wrong"
    for r in reliable:
        assert abs(r["estimate"] - r["true"]) <= bound, r


def test_strong_shifts_alert_and_the_clean_set_does_not(rows):
    clean = next(r for r in rows if r["set"] == "clean")
    assert not clean["alert"], clean
    for r in rows:
        if r["severity"] == "strong":
            assert r["alert"], r
