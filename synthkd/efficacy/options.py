"""What `synthkd efficacy` is asked to do: the command line's options, with each tier's defaults.

The quick tier is sized to finish within an hour on a 2-core CPU with the packaged SmolLM2 teacher; the thorough
tier is meant for a GPU machine (more seeds, a larger budget, more steps). Every default can be overridden by a flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

Tier = Literal["quick", "thorough"]

# Nominal prices for a teacher that has none (a local vLLM model): a small hosted model's list price, so that a
# long generation call counts for more than a short answer, as it would on a bill.
NOMINAL_INPUT_PER_MILLION = 0.15
NOMINAL_OUTPUT_PER_MILLION = 0.60


@dataclass(frozen=True)
class TierDefaults:
    """What a tier runs unless a flag says otherwise."""

    answer_calls: int  # the default cap buys about this many teacher answers (at the probe's measured price)
    steps: int  # optimizer steps of every arm
    extra_steps: int  # further steps of the DPO comparison group (DPO vs the same number of SFT steps)
    baseline_seeds: int  # training seeds of the baseline (plain KD, greedy): its seed-to-seed spread
    arm_seeds: int  # training seeds of every other arm
    heldout_limit: int | None  # prompts per held-out set (None: all)


TIERS: dict[str, TierDefaults] = {
    "quick": TierDefaults(answer_calls=160, steps=48, extra_steps=16, baseline_seeds=2, arm_seeds=1, heldout_limit=100),
    "thorough": TierDefaults(answer_calls=1000, steps=300, extra_steps=100, baseline_seeds=3, arm_seeds=3, heldout_limit=None),
}


@dataclass(frozen=True)
class EfficacyOptions:
    """One `synthkd efficacy` invocation."""

    pipeline: Path
    out: Path
    tier: Tier = "quick"
    heldout_files: tuple[Path, ...] = ()
    teacher: str = "teacher"
    student: str = "student"
    pool: str = "pool"
    budget_usd: float | None = None  # per arm; None: the tier's answer_calls at the measured price
    steps: int | None = None
    extra_steps: int | None = None
    baseline_seeds: int | None = None
    arm_seeds: int | None = None
    heldout_limit: int | None = None
    arms: tuple[str, ...] = ()  # empty: every arm
    batch: int = 8
    learning_rate: float = 5e-4
    dpo_learning_rate: float = 5e-6
    dpo_beta: float = 0.1
    nll_alpha: float = 1.0  # weight of the NLL (SFT) term of DPO+NLL, as RPO uses
    iterations: int = 3  # Lion's K
    tau: float = 5.0  # Lion's referee threshold (code:rouge_l: hard when ROUGE-L < 100 - 10 tau)
    max_tokens: int = 64
    max_length: int = 256
    sampled_temperature: float = 0.7
    nominal_input_per_million: float = NOMINAL_INPUT_PER_MILLION
    nominal_output_per_million: float = NOMINAL_OUTPUT_PER_MILLION
    probe_prompts: int = 24
    probe_generations: int = 16
    probe_samples: int = 4
    command: str = ""
    resolved: dict[str, int | None] = field(default_factory=dict)

    def defaults(self) -> TierDefaults:
        return TIERS[self.tier]

    def with_tier_defaults(self) -> "EfficacyOptions":
        """The options with every unset number taken from the tier (and steps rounded to a multiple of Lion's K, so
        that Lion and its control split the same number of steps evenly over their iterations)."""
        d = self.defaults()
        steps = self.steps if self.steps is not None else d.steps
        steps = max(self.iterations, round(steps / self.iterations) * self.iterations)
        return replace(
            self, steps=steps,
            extra_steps=self.extra_steps if self.extra_steps is not None else d.extra_steps,
            baseline_seeds=self.baseline_seeds if self.baseline_seeds is not None else d.baseline_seeds,
            arm_seeds=self.arm_seeds if self.arm_seeds is not None else d.arm_seeds,
            heldout_limit=self.heldout_limit if self.heldout_limit is not None else d.heldout_limit,
        )
