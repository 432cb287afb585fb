"""The one contract every stage type implements.

A stage type is two things, declared once each:

* its pydantic config (in `synthkd/config/`), a member of the `AnyStage` union, whose
  `implementation()` returns
* one `StageImpl` subclass (next to the method's code), which declares what the stage reads, which
  endpoints and templates it uses, what rows it writes, which endpoints it moves onto new weights,
  and has one `run` that returns one `StageResult`.

The runner, `validate`, fingerprints, `status` and the report read these declarations; none of them
keeps its own list of stage types (as datatrove has one `PipelineStep.run`, and TRL one
Config + Trainer pair per method).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Mapping, Sequence, TypeVar

from jinja2 import nodes
from pydantic import BaseModel

from synthkd.client.accounting import Meter
from synthkd.errors import SynthkdError
from synthkd.paths import inside
from synthkd.items import Item
from synthkd.records import FailedRow, Record, StageStats

if TYPE_CHECKING:
    from synthkd.config.loader import LoadedPipeline
    from synthkd.prompts import Prompt
    from synthkd.runtime import Runtime
    from synthkd.stages.outlet import StageOutlet


@dataclass(frozen=True)
class Reads:
    """An earlier stage's rows this stage reads, named by a config key (`input`, `heldout`, ...)."""

    key: str
    stage: str | None  # None: an optional input left unset
    columns: frozenset[str] = frozenset()  # columns it needs
    columns_key: str | None = None  # the config key a missing column is reported at (default: `key`)


@dataclass(frozen=True)
class Uses:
    """An endpoint a stage calls, named by a config key (`teacher`, `judge`, ...)."""

    key: str
    endpoint: str | None  # None: an optional role left unset
    judge: bool = False  # may also be a judge that is code (`code:rouge_l`), which calls nothing
    served_because: str | None = None  # set when the endpoint must be served by synthkd: why


@dataclass(frozen=True)
class TemplateUse:
    """A jinja2 template a stage renders, named by a config key, with the variables it provides."""

    key: str  # dotted config key, for error messages (`templates.answer`, `synthesis.template`)
    name: str  # file under prompts_dir
    provides: frozenset[str] | None  # None: the columns of the stage's `input`
    also: frozenset[str] = frozenset()  # variables the stage gives besides those (a conversation's transcript, ...)


@dataclass(frozen=True)
class ModelUse:
    """A model string (`tiny:NAME`, a directory, `x.gguf?layers=10`) a stage loads itself."""

    key: str
    spec: str


@dataclass
class ExtraDataset:
    """A dataset a stage writes beside its main output, at the end of its run."""

    suffix: str  # written as RUN_DIR/datasets/<stage>.<suffix>/
    rows: Sequence[Record | Mapping[str, Any]]
    row_type: type[Record]
    description: str
    failed: list[FailedRow] = field(default_factory=list)


@dataclass
class StageResult:
    """What one run of a stage produced: the one shape every stage type returns."""

    rows: Sequence[Record | Mapping[str, Any]]  # records of the stage's row type (a pass-through stage: its input's rows)
    failed: list[FailedRow] = field(default_factory=list)
    meter: Meter = field(default_factory=Meter)
    stats: StageStats | None = None  # typed, written into run.json's entry for the stage
    datasets: list[ExtraDataset] = field(default_factory=list)
    moves: dict[str, str] = field(default_factory=dict)  # endpoint -> weights it serves from now on


@dataclass
class RunInputs:
    """What the runner hands a stage's `run`: the runtime (bound to the stage's `batch:` choice), the rows of each
    stage it reads, and the outlet, the stage's one road to disk (datasets, iteration stats, run.json blocks)."""

    rt: "Runtime"
    rows: dict[str, list[dict[str, Any]]]  # Reads.key -> rows
    out: "StageOutlet"

    def get(self, key: str) -> list[dict[str, Any]]:
        """The rows read under `key`; [] for an optional input left unset."""
        return self.rows.get(key, [])


@dataclass
class CheckContext:
    """What a stage's own `check` may look at during `validate` (no network)."""

    loaded: "LoadedPipeline"
    index: int
    accepted_args: Path | None = None  # trainer argument sets checked before (synthkd.train.common.check_trainer_args)

    def where(self, key: str) -> str:
        """'file: stages.N.key', the place an error message points at."""
        return f"{self.loaded.path}: stages.{self.index}.{key}"

    def served(self, endpoint: str) -> bool:
        return self.loaded.config.endpoints[endpoint].served


C = TypeVar("C", bound=BaseModel)


class StageImpl(Generic[C]):
    """Base of every stage type's implementation. Subclasses set `row_type` and override what applies.

    `row_type` is the type of the main output's rows: its fields are the columns the stage writes,
    and every row is checked against it when written. A stage that passes its input's columns
    through (load, generate, sft, decontaminate) sets `row_type = None` and says in
    `output_columns` which columns it adds.
    """

    row_type: ClassVar[type[Record] | None] = None
    stats_type: ClassVar[type[StageStats]] = StageStats
    fmt: ClassVar[str] = "records"  # how the dataset card describes the main output

    def __init__(self, cfg: C) -> None:
        self.cfg = cfg

    @property
    def name(self) -> str:
        return str(getattr(self.cfg, "name"))

    # ---- declarations (read by validate, fingerprints, the runner) -------------------
    def reads(self) -> list[Reads]:
        return []

    def uses(self) -> list[Uses]:
        return []

    def templates(self) -> list[TemplateUse]:
        return []

    def models(self) -> list[ModelUse]:
        return []

    def moves(self) -> list[str]:
        """Endpoints this stage may move onto new weights (its result's `moves` says onto which)."""
        return []

    def output_columns(self, inputs: dict[str, set[str]], ctx: CheckContext) -> set[str]:
        """Columns of the main output, given the columns of what it reads (keyed as in `reads`)."""
        if self.row_type is None:
            return set(inputs.get("input", set()))
        return self.row_type.columns()

    def check(self, ctx: CheckContext) -> None:
        """Stage-specific validation beyond the declarations (trainer arguments, combinations)."""

    def source_identity(self, loaded: "LoadedPipeline") -> Any:
        """What outside the run a stage's output depends on (a load stage's file), for its fingerprint."""
        return None

    def input_key(self) -> str | None:
        """The key of the rows counted as `records_in` (the stage's `input`, where it has one)."""
        return "input" if any(r.key == "input" for r in self.reads()) else None

    # ---- the work ------------------------------------------------------------------
    async def run(self, inp: RunInputs) -> StageResult:
        raise NotImplementedError


def checkpoint_dir(rt: "Runtime", *parts: str) -> Path:
    """RUN_DIR/checkpoints/<parts...>: where every stage type keeps the weights it trains."""
    return inside(rt.run_dir / "checkpoints", *parts)


def failed_row(row: Mapping[str, Any] | Item, res: Any, step: str, **extra: Any) -> FailedRow:
    """A row whose call failed, as it goes to failed.jsonl: what it was for, the step, and why.

    `res` is the call's `Result` (its error, detail and raw reply are kept); failures are data.
    """
    return FailedRow.of(row.as_row() if isinstance(row, Item) else row, getattr(res, "error", None) or "empty", **extra, step=step,
                        detail=getattr(res, "detail", None), raw=getattr(res, "text", None))


class RowProblem(Exception):
    """One input row cannot be sent: it becomes a failed row with `reason` and `detail`, and costs no call."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")

    def failed(self, row: Mapping[str, Any], **fields: Any) -> FailedRow:
        """The row as it goes to failed.jsonl (with any further `fields`)."""
        return FailedRow.of(row, self.reason, detail=self.detail, **fields)


def split_blank(rows: list[dict[str, Any]], column: str) -> tuple[list[dict[str, Any]], list[FailedRow]]:
    """(rows whose `column` holds text, the others as failed rows with reason `empty_input`): for stages that send
    a column as it is, where a null or blank value would be a paid request about nothing."""
    keep: list[dict[str, Any]] = []
    failed: list[FailedRow] = []
    for row in rows:
        value = row.get(column)
        if value is None or (isinstance(value, str) and not value.strip()):
            failed.append(RowProblem("empty_input", f"column {column} is null or blank").failed(row))
        else:
            keep.append(row)
    return keep, failed


def render_row(prompt: "Prompt", row: dict[str, Any]) -> str:
    """`prompt` rendered for one row; RowProblem when the row lacks a column it reads (`missing_column:<name>`),
    a value it always sends is null or blank (`empty_input`: nothing worth paying for), or rendering fails
    on this row's values (`template_error`)."""
    missing = sorted(prompt.variables - row.keys() - prompt.template.environment.globals.keys())
    if missing:
        raise RowProblem(f"missing_column:{missing[0]}", f"the row has no column(s) {', '.join(missing)}, which {prompt.name} reads")
    empty = sorted(v for v in always_sent(prompt) if v in row and (row[v] is None or (isinstance(row[v], str) and not row[v].strip())))
    if empty:
        raise RowProblem("empty_input", f"column(s) {', '.join(empty)} null or blank, which {prompt.name} puts into the prompt")
    try:
        return prompt.render(**row)
    except SynthkdError:  # the sandbox stopping the template: it would stop every row, so the run stops
        raise
    except Exception as exc:  # noqa: BLE001 (jinja2 raises the error of whatever filter or test failed on these values)
        raise RowProblem("template_error", f"{prompt.name}: {type(exc).__name__}: {exc}") from None


@lru_cache(maxsize=64)
def always_sent(prompt: "Prompt") -> frozenset[str]:
    """Variables a template outputs unconditionally: outside `if`/`for` blocks, conditional expressions
    and `default` filters. A null or blank value of one of them always reaches the prompt as is."""
    names: set[str] = set()

    def visit(node: nodes.Node) -> None:
        if isinstance(node, nodes.CondExpr) or (isinstance(node, nodes.Filter) and node.name in ("default", "d")):
            return
        if isinstance(node, nodes.Name) and node.ctx == "load":
            names.add(node.name)
        for child in node.iter_child_nodes():
            visit(child)

    for node in prompt.template.environment.parse(prompt.source).body:
        if isinstance(node, nodes.Output):
            visit(node)
    return frozenset(names)
