"""The typed form of efficacy.json: what `synthkd efficacy` measured, built as models by the command and read by
the report.

Reading is tolerant, as run.json's readers are: unknown keys are ignored, a missing block is empty, and an entry that
is not an object (a half-written or hand-edited file) is dropped, so a partial result still renders. Writing dumps
every field under its JSON name (`yield` for `GenerationYield.share`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from synthkd.records import Interval, Stats

T = TypeVar("T")


def _objects(value: Any) -> Any:
    """A JSON object of objects: entries that are not objects are dropped; null is empty."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items() if isinstance(v, (Mapping, BaseModel))}
    return value


def _object_list(value: Any) -> Any:
    """A JSON list of objects: items that are not objects are dropped; null is empty."""
    if value is None:
        return []
    if isinstance(value, list):
        return [v for v in value if isinstance(v, (Mapping, BaseModel))]
    return value


def _empty_if_null(value: Any) -> Any:
    return {} if value is None else value


def _no_items_if_null(value: Any) -> Any:
    return [] if value is None else value


Objects = Annotated[dict[str, T], BeforeValidator(_objects)]
ObjectList = Annotated[list[T], BeforeValidator(_object_list)]


class Figures(Stats):
    """Base of every block: as run.json's blocks, unknown keys are ignored (older or newer files); a field with a JSON
    name of its own (`yield`) is set by either name."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class McNemar(Figures):
    """McNemar's exact test on gold: b = right for the baseline only, c = right for the arm only."""

    b: int = 0
    c: int = 0
    p_value: float | None = None


class Difference(Figures):
    """An arm minus its baseline on one set and metric (NLL in its own direction: negative is better)."""

    mean: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None  # McNemar's where it applies, else the paired bootstrap's
    p_holm: float | None = None  # Holm-corrected across the arms compared on the same set and metric
    detectable: float | None = None  # the smallest difference this setup could detect
    seed_spread: float | None = None  # training noise the gain must exceed
    verdict: str | None = None
    mcnemar: McNemar | None = None


class FamilyGold(Figures):
    """Gold accuracy within one family of a held-out set (seed-averaged)."""

    gold_accuracy: float | None = None
    n: int = 0


class SetComparison(Figures):
    """One arm on one held-out set: its metrics, its differences against its baseline, the teacher-hacking flag and
    gold per family."""

    metrics: Objects[Interval] = Field(default_factory=dict)
    vs_baseline: Objects[Difference] = Field(default_factory=dict)
    teacher_hacking: bool = False
    per_family: Objects[FamilyGold] = Field(default_factory=dict)


class ArmSpend(Figures):
    """What an arm paid the teacher per run (mean over its seeds), against the cap."""

    cap_usd: float | None = None
    calls: float | None = None
    input_tokens: float | None = None
    output_tokens: float | None = None
    cost_usd: float | None = None
    untrained_calls: float | None = None  # paid replies that reached no training example
    untrained_usd: float | None = None
    max_cost_usd: float | None = None


class GenerationYield(Figures):
    """Lion's generation calls and how many gave a usable instruction."""

    calls: int = 0
    usable: int = 0
    share: float | None = Field(default=None, alias="yield")


class Training(Figures):
    """What an arm trained (mean over its seeds): optimizer steps, distinct examples, wall time of its own stages."""

    steps: int | None = None
    steps_per_seed: list[int] = Field(default_factory=list)
    examples: int | None = None
    wall_s: float | None = None
    generation: GenerationYield | None = None


class ArmResult(Figures):
    """One arm: what it is, whether it finished, what it cost and trained, and its comparison per held-out set."""

    label: str | None = None
    description: str | None = None
    baseline: str | None = None
    status: str | None = None  # done, running, failed, skipped
    reason: str | None = None
    seeds: list[int] = Field(default_factory=list)
    spend: ArmSpend | None = None
    training: Training | None = None
    sets: Objects[SetComparison] = Field(default_factory=dict)


class ReferenceSet(Figures):
    """The ceiling (the teacher) and the floor (the untrained student) on one held-out set."""

    n: int | None = None
    gold_n: int | None = None
    teacher: Objects[Interval] = Field(default_factory=dict)
    floor: Objects[Interval] = Field(default_factory=dict)


class Reference(Figures):
    """The reference run: what the teacher's scoring answers cost, and floor and ceiling per set."""

    cost_usd: float | None = None
    sets: Objects[ReferenceSet] = Field(default_factory=dict)


class Example(Figures):
    """A held-out prompt with the teacher's and each arm's answer (the side-by-side table)."""

    id: str = ""
    instruction: str = ""
    gold: str | None = None
    teacher: str = ""
    answers: Annotated[dict[str, str], BeforeValidator(_empty_if_null)] = Field(default_factory=dict)


class Probe(Figures):
    """A probe's outcome: `status` (ok, failed, skipped) and one line; the figures depend on the probe."""

    status: str | None = None
    summary: str | None = None


class AnswerCost(Probe):
    """The teacher's greedy answers to sampled pool prompts: the price per call that sizes every arm."""

    calls: int = 0
    answered: int = 0
    mean_cost_usd: float | None = None
    mean_input_tokens: float | None = None
    mean_output_tokens: float | None = None
    teacher_gold_accuracy: float | None = None


class StudentCompetence(Probe):
    """The share of prompts Lion's referee calls hard for the untrained student."""

    judged: int = 0
    hard_fraction: float | None = None


class GeneratorProbe(Probe):
    """Lion's generation call on sampled seeds through its schema and filters."""

    calls: int = 0
    usable: int = 0
    share: float | None = Field(default=None, alias="yield")
    rejected: dict[str, int] = Field(default_factory=dict)
    mean_cost_usd: float | None = None
    skips: list[str] = Field(default_factory=list)  # arms skipped for a low yield


class BestOfNProbe(Probe):
    """Greedy pass@1 against pass@n of sampled answers on pool prompts with gold."""

    prompts: int = 0
    n: int = 0
    pass_at_1: float | None = None
    pass_at_n: float | None = None


class Probes(Figures):
    """Every probe, in the order they run."""

    answer_cost: AnswerCost | None = None
    student_competence: StudentCompetence | None = None
    generator_yield: GeneratorProbe | None = None
    best_of_n: BestOfNProbe | None = None
    judge_sanity: Probe | None = None

    def present(self) -> list[tuple[str, Probe]]:
        """(name, probe) of the probes that ran or were skipped with a reason."""
        return [(name, p) for name in type(self).model_fields if isinstance(p := getattr(self, name), Probe)]


class TeacherInfo(Figures):
    """The teacher endpoint and the prices the cap was counted in."""

    endpoint: str | None = None
    model: str | None = None
    input_per_million: float | None = None
    output_per_million: float | None = None
    nominal_price: bool = False


class StudentInfo(Figures):
    model: str | None = None


class EfficacyResult(Figures):
    """efficacy.json: the comparison of every arm on the user's teacher, student and held-out sets."""

    version: int = 1
    command: str | None = None
    tier: str | None = None
    teacher: TeacherInfo = Field(default_factory=TeacherInfo)
    student: StudentInfo = Field(default_factory=StudentInfo)
    budget_usd: float | None = None
    budget_from: str | None = None
    steps: int | None = None
    extra_steps: int | None = None
    batch: int | None = None
    sizes: dict[str, int] = Field(default_factory=dict)
    wall_s: float | None = None
    probes: Probes = Field(default_factory=Probes)
    reference: Reference = Field(default_factory=Reference)
    arms: Objects[ArmResult] = Field(default_factory=dict)
    examples: Annotated[dict[str, ObjectList[Example]], BeforeValidator(_empty_if_null)] = Field(default_factory=dict)
    conclusion: Annotated[list[str], BeforeValidator(_no_items_if_null)] = Field(default_factory=list)

    @classmethod
    def read(cls, data: EfficacyResult | Mapping[str, Any]) -> EfficacyResult:
        """A result from its model or from efficacy.json's object (tolerantly: see the module's docstring)."""
        return data if isinstance(data, EfficacyResult) else cls.model_validate(dict(data))

    def to_json(self) -> dict[str, Any]:
        """The object efficacy.json holds (JSON names; NaN and infinities become null when written)."""
        return self.model_dump(mode="json", by_alias=True)
