"""The lab's statistics and validity gates, on synthetic numbers whose answer is known."""

from __future__ import annotations

import math
import random

import pytest

from visionzoo.lab.stats import T975, binomial_se, mcnemar_se, one_sample, paired, t975
from visionzoo.lab.verdict import (
    INCONCLUSIVE,
    NOT,
    REPRODUCED,
    ClaimResult,
    SubClaim,
    at_chance,
    below_base,
    censored_both,
    decide,
    unconverged,
)


def simulate(effect: float, noise: float, seeds: int, rng: random.Random) -> str:
    """One experiment: per-seed accuracies of two paired arms, judged by the `greater` rule."""
    base = [0.90 + rng.gauss(0, 0.01) for _ in range(seeds)]  # shared by the pair (same seed)
    new = [b + effect + rng.gauss(0, noise) for b in base]
    return SubClaim.judge("sim", paired(new, base), "greater").verdict


def test_t_table_matches_known_quantiles():
    assert t975(1) == pytest.approx(12.706, abs=1e-3)
    assert t975(4) == pytest.approx(2.776, abs=1e-3)
    assert t975(30) == pytest.approx(2.042, abs=1e-3)
    assert t975(1000) == pytest.approx(1.96, abs=0.01)
    assert list(T975) == sorted(T975, reverse=True)


def test_paired_interval_on_known_differences():
    iv = paired([0.92, 0.93, 0.94], [0.90, 0.91, 0.92])  # every difference is exactly 0.02
    assert iv.effect == pytest.approx(0.02) and iv.half_width == pytest.approx(0.0, abs=1e-9)
    iv = paired([0.93, 0.91], [0.90, 0.90])  # diffs 0.03, 0.01: sd 0.01414, se 0.01
    assert iv.half_width == pytest.approx(12.706 * 0.01, rel=1e-3)
    assert math.isinf(paired([0.9], [0.8]).half_width)  # one seed: no seed spread known
    with pytest.raises(ValueError):
        paired([0.9, 0.8], [0.9])


def test_test_set_noise_widens_the_interval():
    a = [True] * 50 + [False] * 50
    b = [True] * 40 + [False] * 10 + [True] * 0 + [False] * 50  # a wins 10, b wins 0
    se = mcnemar_se(a, b)
    assert se == pytest.approx(math.sqrt(10 - 100 / 100) / 100)
    assert mcnemar_se(a, a) == 0.0  # identical predictions: no test-set noise in the difference
    narrow = paired([0.92, 0.93, 0.94], [0.90, 0.91, 0.92])
    wide = paired([0.92, 0.93, 0.94], [0.90, 0.91, 0.92], se_test=0.01)
    assert wide.half_width == pytest.approx(1.96 * 0.01) and wide.lo < narrow.lo
    assert binomial_se(0.9, 10_000) == pytest.approx(0.003)


def test_a_true_half_point_effect_is_reproduced_most_of_the_time():
    rng = random.Random(0)
    runs = [simulate(0.005, 0.002, 5, rng) for _ in range(400)]
    assert runs.count(REPRODUCED) / len(runs) > 0.8


def test_a_null_effect_is_rarely_reproduced():
    rng = random.Random(1)
    runs = [simulate(0.0, 0.002, 5, rng) for _ in range(400)]
    assert runs.count(REPRODUCED) / len(runs) < 0.05  # the 95% interval's one-sided 2.5%


def test_a_reversed_effect_is_not_reproduced():
    rng = random.Random(2)
    assert simulate(-0.01, 0.002, 5, rng) == NOT


def test_no_worse_and_at_least_rules():
    close = paired([0.901, 0.899, 0.900, 0.902, 0.900], [0.9] * 5)
    assert decide("no_worse", close, margin=0.005)[0] == REPRODUCED
    worse = paired([0.88, 0.881, 0.879, 0.880, 0.882], [0.9] * 5)
    assert decide("no_worse", worse, margin=0.005)[0] == NOT
    noisy = paired([0.86, 0.94, 0.88, 0.93, 0.89], [0.9] * 5)
    assert decide("no_worse", noisy, margin=0.005)[0] == INCONCLUSIVE
    above = one_sample([x - 0.985 for x in (0.990, 0.991, 0.989, 0.990, 0.992)])
    assert decide("at_least", above)[0] == REPRODUCED
    assert decide("greater", paired([0.95] * 2 + [0.951], [0.9] * 3), margin=0.1)[0] == NOT


def test_an_arm_at_chance_makes_the_subclaim_inconclusive():
    iv = paired([0.11, 0.10, 0.10, 0.09, 0.10], [0.85, 0.86, 0.85, 0.84, 0.85])
    flag = at_chance("plain", [0.11, 0.10, 0.10, 0.09, 0.10], chance=0.1)
    sub = SubClaim.judge("highway beats plain", iv, "greater", flags=[flag], primary=True)
    assert sub.verdict == INCONCLUSIVE and "plain at chance" in sub.reason
    assert at_chance("highway", [0.85, 0.86], chance=0.1) is None


def test_unconverged_censored_and_below_base_gates():
    rising = [[0.70, 0.75, 0.80, 0.84, 0.87]] * 3
    flat = [[0.80, 0.86, 0.870, 0.871, 0.872, 0.872]] * 3
    assert "unconverged" in (unconverged("vit", rising) or "")
    assert unconverged("vit", flat) is None
    assert unconverged("vit", [[0.5, 0.6]]) is not None  # too short to judge
    # evaluated every 10 epochs: the window is 3 evaluations, 30 epochs
    assert "last 30 epochs" in (unconverged("vit", rising, every=10) or "")
    assert censored_both("tanh / relu", [True, True], [True, True]) is not None
    assert censored_both("tanh / relu", [True, True], [False, True]) is None
    assert below_base("compound", [0.80, 0.81], [0.82, 0.83]) is not None
    assert below_base("compound", [0.84, 0.85], [0.82, 0.83]) is None


def test_headline_comes_from_the_one_primary_subclaim():
    primary = SubClaim.judge("a", paired([0.95] * 5, [0.90] * 5), "greater", primary=True)
    worse = SubClaim.judge("b", paired([0.85] * 5, [0.90] * 5), "greater")
    result = ClaimResult([primary, worse], arms={}, recipe={}, scaled_down=[])
    assert result.verdict == REPRODUCED and result.to_json()["secondary"][0]["verdict"] == NOT
    with pytest.raises(ValueError):
        ClaimResult([worse], arms={}, recipe={}, scaled_down=[])


def fake_runs(accs: list[float], rise: float = 0.0, n_test: int = 1000) -> list[dict]:
    """Runs as `Context.train` returns them: final accuracy, a 6-epoch curve, correctness."""
    runs = []
    for seed, acc in enumerate(accs):
        curve = [{"test_acc": acc - rise * (5 - e) / 5} for e in range(6)]
        right = round(acc * n_test)
        correct = [i < right for i in range(n_test)]
        runs.append({"seed": seed, "final": {"test_acc": acc}, "curve": curve, "correct": correct})
    return runs


def test_compare_pairs_runs_by_seed_and_applies_the_gates():
    from visionzoo.lab.claims.common import compare

    new = fake_runs([0.905, 0.911, 0.907, 0.909, 0.912])
    old = fake_runs([0.890, 0.893, 0.889, 0.894, 0.891])
    sub = compare("new beats old", ("new", new), ("old", old), "greater", "synthetic")
    acc = [[r["final"]["test_acc"] for r in runs] for runs in (new, old)]
    seeds_only = paired(*acc)
    assert sub.verdict == REPRODUCED and sub.seeds == 5
    assert 0 < sub.lo < seeds_only.lo  # the test-set disagreements widen the interval
    rising = fake_runs([0.905, 0.911, 0.907, 0.909, 0.912], rise=0.05)
    sub = compare("new beats old", ("new", rising), ("old", old), "greater", "synthetic")
    assert sub.verdict == INCONCLUSIVE and "new unconverged" in sub.reason
    chance = fake_runs([0.10, 0.11, 0.09, 0.10, 0.10])
    sub = compare("old beats chance", ("old", old), ("x", chance), "greater", "synthetic")
    assert sub.verdict == INCONCLUSIVE and "x at chance" in sub.reason


def test_a_log_ratio_margin_is_named_in_its_own_unit():
    from visionzoo.lab.stats import Interval
    from visionzoo.lab.verdict import SubClaim

    iv = Interval(effect=-0.41, lo=-0.55, hi=-0.26, n=5, se_seed=0.05)
    sub = SubClaim.judge("ratio", iv, "greater", margin=math.log(3), primary=True, unit="")
    assert sub.verdict == "not reproduced"
    assert sub.reason == "the interval lies below 1.10", sub.reason
    pp = SubClaim.judge("gap", iv, "greater", margin=0.01, primary=True)
    assert pp.reason == "the interval lies below 1.00 pp", pp.reason
