"""The one road from a running stage to disk.

A stage never writes a dataset or a run.json key itself: the runner hands it a `StageOutlet`, bound to
the stage, through which it writes its datasets while it runs (so a crash leaves what was made visible),
its per-iteration stats and its result blocks. The outlet fills in what every dataset card needs (the
stage's templates, the models behind the data, the pipeline) and checks every run.json key against the
stage's stats type, so no method repeats the bookkeeping and none can write a key status cannot read.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from pydantic import BaseModel

from synthkd.errors import SynthkdError
from synthkd.hashing import digest
from synthkd.prompts import MOVED
from synthkd.records import FailedRow, Iteration, Record, plain_rows
from synthkd.scoring.code_judge import is_code_judge

if TYPE_CHECKING:
    from synthkd.runtime import Runtime
    from synthkd.stages.base import StageImpl


def stage_endpoints(impl: "StageImpl[Any]") -> list[str]:
    """Endpoints a stage calls (judges that are code call none)."""
    return [u.endpoint for u in impl.uses() if u.endpoint and not is_code_judge(u.endpoint)]


def stage_templates(rt: "Runtime", impl: "StageImpl[Any]") -> dict[str, str]:
    """Template name -> hash, for the templates a stage renders."""
    return {t.name: rt.prompts.get(t.name).sha256 for t in impl.templates()}


def fingerprint_templates(rt: "Runtime", impl: "StageImpl[Any]") -> dict[str, str]:
    """`stage_templates` as a stage's fingerprint records them: a moved template (prompts.MOVED) under its old
    name, so which of its two names a pipeline uses leaves the fingerprint as it was before the move."""
    return {rt.prompts.fingerprint_name(t.name): rt.prompts.get(t.name).sha256 for t in impl.templates()}


def fingerprint_config(rt: "Runtime", impl: "StageImpl[Any]") -> BaseModel:
    """The stage's config as its fingerprint records it: every field naming a moved template (prompts.MOVED), read
    by the stage or not, under `PromptLibrary.fingerprint_name`. A stage a run finished before the move recorded
    the old default names; the new defaults (or new names written in the pipeline) must find it done, not pay for
    its calls again."""
    return _recorded(impl.cfg, rt.prompts.fingerprint_name)


def _recorded(model: BaseModel, record: Callable[[str], str]) -> BaseModel:
    """A copy of `model` (and of its nested models) with each string field that names a moved template passed through
    `record`; `model` itself when nothing changes. Template names sit in string fields of the stage's config models."""
    update: dict[str, str | BaseModel] = {}
    for key in type(model).model_fields:
        value = getattr(model, key)
        if isinstance(value, str) and value in MOVED and (recorded := record(value)) != value:
            update[key] = recorded
        elif isinstance(value, BaseModel) and (copy := _recorded(value, record)) is not value:
            update[key] = copy
    return model.model_copy(update=update) if update else model


def stage_models(rt: "Runtime", impl: "StageImpl[Any]") -> dict[str, str]:
    """What a dataset card names as the models behind a stage's data (the weights each endpoint serves now)."""
    return {**{m.key: m.spec for m in impl.models()}, **{e: rt.endpoint_identity(e) for e in stage_endpoints(impl)}}


class StageOutlet:
    """Where one stage writes: `dataset` for RUN_DIR/datasets/<stage>.<suffix>/, `iteration` and `block` for its
    run.json entry (saved at once). The main output and the final entry are the runner's."""

    def __init__(self, rt: "Runtime", impl: "StageImpl[Any]") -> None:
        self._rt, self._impl = rt, impl
        self.written: list[str] = []  # suffixes written, in order

    @property
    def stage(self) -> str:
        return self._impl.name

    def dataset(self, suffix: str, rows: Sequence[Record | Mapping[str, Any]], failed: Sequence[FailedRow] | None = None, *,
                row_type: type[Record], description: str, fmt: str = "records", counts: dict[str, int] | None = None,
                fingerprint: str | None = None) -> Path:
        """Write RUN_DIR/datasets/<stage>.<suffix>/ now (rows checked against `row_type`), with the stage's card.

        `fingerprint` defaults to a digest of the rows: a dataset that is a record of what happened, not a cache
        a rerun may trust. A rerun writes the same suffix again, replacing it.
        """
        self.written.append(suffix)
        rows = plain_rows(rows)
        return self._rt.write_dataset(
            f"{self.stage}.{suffix}", rows, failed or [], row_type=row_type,
            fingerprint=fingerprint if fingerprint is not None else digest(rows),
            templates=stage_templates(self._rt, self._impl), models=stage_models(self._rt, self._impl),
            counts=counts, fmt=fmt, description=description)

    def iteration(self, stats: Iteration) -> None:
        """Record one iteration's stats (replacing an earlier record of the same iteration) and save run.json."""
        self._known("iterations")
        self._rt.state.save_iteration(self.stage, stats)

    def block(self, key: str, value: BaseModel | None) -> None:
        """Set one result block of the stage's run.json entry (a field of its stats type) and save run.json."""
        self._known(key)
        self._rt.state.stage(self.stage)[key] = None if value is None else value.model_dump(exclude_none=True)
        self._rt.state.save()

    def _known(self, key: str) -> None:
        if key not in self._impl.stats_type.model_fields:
            raise SynthkdError(f"internal error: stage {self.stage!r} wrote run.json key {key!r}, which its stats type "
                               f"{self._impl.stats_type.__name__} does not declare",
                               fix="please report this; every paid reply is cached, so rerunning after a fix costs nothing")
