"""Paired statistics for comparing a method (an arm) with a baseline on the same held-out prompts.

Every arm is scored on the same prompts, so differences are taken prompt by prompt (paired) rather than arm
means compared by eye: the paired bootstrap resamples prompts (and training seeds, where an arm has several),
McNemar's exact test compares gold accuracy on the prompts where the two arms disagree, and Holm's step-down
correction keeps the family-wise error at `alpha` across arms. A method pays off only when its gain's lower bound
is above zero and the gain exceeds the baseline's own seed-to-seed spread; otherwise the verdict says there is
no detectable difference at this budget, with the smallest difference the setup could have detected.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

PAYS_OFF = "pays off"
WORSE = "worse than the baseline"
NO_DIFFERENCE = "no detectable difference at this budget"

# Two-sided 5% and 80% power: the usual design values for a minimum detectable difference.
_Z_ALPHA = 1.959964
_Z_POWER = 0.841621


@dataclass(frozen=True)
class PairedDifference:
    """Arm minus baseline, averaged over prompts (and over each side's training seeds), with its bootstrap interval
    and two-sided bootstrap p-value."""

    mean: float
    ci_low: float
    ci_high: float
    p_value: float
    n_prompts: int
    arm_seeds: int
    baseline_seeds: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _per_prompt(runs: Sequence[Sequence[float]], n: int, name: str) -> None:
    if not runs or any(len(run) != n for run in runs):
        raise ValueError(f"{name}: every training seed needs one score per prompt ({n} prompts)")


def paired_bootstrap(baseline: Sequence[Sequence[float]], arm: Sequence[Sequence[float]], *, level: float = 0.95,
                     resamples: int = 2000, seed: int = 0) -> PairedDifference:
    """The paired difference arm − baseline over the same prompts.

    `baseline[s][i]` / `arm[t][i]`: the score of training seed s (t) on prompt i. The statistic is the mean over
    prompts of (the arm's mean over its seeds − the baseline's mean over its seeds). Each resample draws prompts
    with replacement and, for a side with several seeds, its seeds with replacement, so seed-to-seed noise widens
    the interval. The p-value is twice the smaller tail of resampled differences at zero ((count + 1) / (resamples
    + 1), so never exactly 0), capped at 1.
    """
    n = len(baseline[0]) if baseline else 0
    _per_prompt(baseline, n, "baseline")
    _per_prompt(arm, n, "arm")
    if n == 0:
        raise ValueError("no prompts to compare on")
    rng = random.Random(seed)

    def statistic(prompts: Sequence[int], base_seeds: Sequence[int], arm_seeds: Sequence[int]) -> float:
        total = 0.0
        for i in prompts:
            total += sum(arm[t][i] for t in arm_seeds) / len(arm_seeds) - sum(baseline[s][i] for s in base_seeds) / len(base_seeds)
        return total / len(prompts)

    everything = range(n)
    observed = statistic(everything, range(len(baseline)), range(len(arm)))
    draws = []
    for _ in range(resamples):
        prompts = [rng.randrange(n) for _ in everything]
        base_seeds = [rng.randrange(len(baseline)) for _ in baseline] if len(baseline) > 1 else [0]
        arm_seeds = [rng.randrange(len(arm)) for _ in arm] if len(arm) > 1 else [0]
        draws.append(statistic(prompts, base_seeds, arm_seeds))
    draws.sort()
    low = draws[int((1 - level) / 2 * resamples)]
    high = draws[min(resamples - 1, int((1 + level) / 2 * resamples))]
    below = sum(1 for d in draws if d <= 0)
    above = sum(1 for d in draws if d >= 0)
    p = min(1.0, 2 * (min(below, above) + 1) / (resamples + 1))
    return PairedDifference(observed, low, high, p, n, len(arm), len(baseline))


@dataclass(frozen=True)
class McNemar:
    """Gold accuracy of two arms on the same prompts: `b` prompts only the baseline gets right, `c` only the arm;
    `p_value` is the exact two-sided binomial test of b against c (the prompts both get right or wrong say nothing
    about which arm is better)."""

    b: int
    c: int
    p_value: float


def mcnemar(baseline: Sequence[bool], arm: Sequence[bool]) -> McNemar:
    """McNemar's exact test for paired binary outcomes (gold correct or not, prompt by prompt)."""
    if len(baseline) != len(arm):
        raise ValueError("both arms must be scored on the same prompts")
    b = sum(1 for x, y in zip(baseline, arm) if x and not y)
    c = sum(1 for x, y in zip(baseline, arm) if y and not x)
    n = b + c
    if n == 0:
        return McNemar(b, c, 1.0)
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return McNemar(b, c, min(1.0, 2 * tail))


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values (family-wise error across the arms compared with one baseline)."""
    order = sorted(p_values, key=lambda name: p_values[name])
    m = len(order)
    adjusted: dict[str, float] = {}
    running = 0.0
    for rank, name in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[name]))
        adjusted[name] = running
    return adjusted


def seed_spread(runs: Sequence[Sequence[float]]) -> float:
    """How far apart one arm's training seeds land: the largest gap between their mean scores (0 with one seed)."""
    means = [statistics.fmean(run) for run in runs if run]
    return max(means) - min(means) if len(means) > 1 else 0.0


def detectable_difference(baseline: Sequence[Sequence[float]], arm: Sequence[Sequence[float]]) -> float:
    """The smallest true difference this many prompts would detect at 5% (two-sided) with 80% power.

    Conservative: the standard error is the larger of the paired differences' and that of two independent arms
    as variable as the baseline (pairing only helps when arms agree, and two identical arms would otherwise claim
    to detect anything); the baseline's seed-to-seed spread is a floor, as a smaller gain is not told from noise.
    """
    n = len(baseline[0])
    base = [statistics.fmean(run[i] for run in baseline) for i in range(n)]
    diffs = [statistics.fmean(run[i] for run in arm) - base[i] for i in range(n)]
    paired = statistics.stdev(diffs) / math.sqrt(n) if n > 1 else math.inf
    spread = statistics.stdev(base) if n > 1 else math.inf
    if all(v in (0.0, 1.0) for run in (*baseline, *arm) for v in run):
        # A right/wrong score: a baseline at 0% (or 100%) has no spread, yet a gain needs prompts that flip; the
        # binomial spread at a rate of at least half a prompt keeps "could detect" honest there.
        rate = min(max(statistics.fmean(base), 0.5 / n), 1 - 0.5 / n)
        spread = max(spread, math.sqrt(rate * (1 - rate)))
        # McNemar's exact test needs at least this many prompts flipping one way before any gain is significant
        # (2 * 0.5^k < 5%: k = 6), however small the spread: the normal approximation is wrong near 0% and 100%.
        floor = math.ceil(math.log2(2 / 0.05)) / n
    else:
        floor = 0.0
    independent = spread * math.sqrt(2 / n) if n > 1 else math.inf
    return max((_Z_ALPHA + _Z_POWER) * max(paired, independent), seed_spread(baseline), floor)


def verdict(difference: PairedDifference, spread: float, *, adjusted_p: float | None = None, alpha: float = 0.05) -> str:
    """`PAYS_OFF` when the gain's interval is above zero and the gain exceeds the baseline's seed-to-seed spread
    (and, given Holm's adjusted p-value, that is below `alpha`); `WORSE` in the mirror case; else `NO_DIFFERENCE`."""
    significant = adjusted_p is None or adjusted_p < alpha
    if significant and difference.ci_low > 0 and difference.mean > spread:
        return PAYS_OFF
    if significant and difference.ci_high < 0 and -difference.mean > spread:
        return WORSE
    return NO_DIFFERENCE
