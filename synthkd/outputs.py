"""Stage outputs on disk: a `datasets` dataset, a JSONL copy, failed rows and a dataset card.

RUN_DIR/datasets/<stage>/
    *.arrow, state.json, dataset_info.json   datasets.load_from_disk(<this directory>)
    data.jsonl       the same rows, one JSON object a line
    failed.jsonl     rows that did not make it, with their reason and raw reply
    README.md        dataset card: pipeline YAML, models, template hashes, counts
    _done.json       fingerprint + counts; written last, so its presence means the output is whole
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthkd.jsonl import read_jsonl, write_jsonl
from synthkd.paths import inside
from synthkd.redact import scrub

_DONE = "_done.json"


@dataclass
class CardInfo:
    """What a dataset card says about how the data was made."""

    pipeline_name: str
    pipeline_yaml: str
    stage: str
    description: str = ""
    models: dict[str, str] = field(default_factory=dict)
    templates: dict[str, str] = field(default_factory=dict)  # template name -> sha256 prefix
    counts: dict[str, int] = field(default_factory=dict)  # records_in, iteration, hard, ... as the card lists them
    fmt: str = "records"


def output_dir(run_dir: Path, stage: str) -> Path:
    """RUN_DIR/datasets/<stage>; a name that would lead elsewhere is refused (the output is replaced there)."""
    return inside(run_dir / "datasets", stage)


def is_done(run_dir: Path, stage: str, fingerprint: str) -> bool:
    """True if the stage's output is complete and was made from exactly these inputs."""
    marker = output_dir(run_dir, stage) / _DONE
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("fingerprint") == fingerprint
    except (OSError, json.JSONDecodeError):
        return False


def is_done_any(run_dir: Path, stage: str) -> bool:
    """True if the stage's output is complete, whatever inputs made it (for readers of a finished run)."""
    return (output_dir(run_dir, stage) / _DONE).is_file()


def write_output(run_dir: Path, stage: str, rows: list[dict[str, Any]], failed: list[dict[str, Any]], card: CardInfo, fingerprint: str,
                 columns: list[str] | None = None) -> Path:
    """Write a stage's output atomically (temporary directory, then rename).

    An empty output is still a dataset that `load_from_disk` opens: zero rows with its declared
    `columns` (or one `id` column when none are known), never a directory without an arrow file.
    """
    import datasets  # heavy import: only when writing
    from datasets import Dataset

    datasets.disable_progress_bars()

    final = output_dir(run_dir, stage)
    tmp = inside(final.parent, final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if rows:
        Dataset.from_list(rows).save_to_disk(str(tmp))
    else:  # datasets writes no shard for zero rows unless asked for one, and load_from_disk then fails
        _empty(columns).save_to_disk(str(tmp), num_shards=1)
    write_jsonl(tmp / "data.jsonl", rows)
    write_jsonl(tmp / "failed.jsonl", failed)
    card.counts = {"rows": len(rows), "failed": len(failed), **card.counts}
    (tmp / "README.md").write_text(render_card(card, rows))
    (tmp / _DONE).write_text(json.dumps({"fingerprint": fingerprint, "rows": len(rows), "failed": len(failed)}))
    # On disk before the rename makes them the output: after a power loss the done-marker never stands beside a
    # file the kernel had not written yet.
    sync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    sync_dir(final.parent)
    return final


def sync_tree(root: Path) -> None:
    """fsync every file under `root`, then the directories (a file's name lives in its directory)."""
    dirs = [root]
    for path in sorted(root.rglob("*")):
        if path.is_dir():
            dirs.append(path)
        elif path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for path in dirs:
        sync_dir(path)


def sync_dir(path: Path) -> None:
    """fsync a directory, so renames and new names in it are durable (a no-op where the OS cannot)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _empty(columns: list[str] | None) -> Any:
    """A zero-row dataset with these columns (strings: the type of an empty column is unknown)."""
    from datasets import Dataset, Features, Value

    names = list(columns or []) or ["id"]
    return Dataset.from_dict({c: [] for c in names}, features=Features({c: Value("string") for c in names}))


def load_output(run_dir: Path, stage: str) -> list[dict[str, Any]]:
    """The rows a finished stage wrote (from the JSONL copy: fast and type-faithful)."""
    path = output_dir(run_dir, stage) / "data.jsonl"
    return read_jsonl(path)


def render_card(card: CardInfo, rows: list[dict[str, Any]]) -> str:
    """A Hugging Face style dataset card (YAML header + markdown), with URLs and known secrets redacted."""
    columns = sorted({k for r in rows[:100] for k in r})
    lines = [
        "---",
        "tags: [synthetic, synthkd, distillation]",
        f"pretty_name: {card.pipeline_name} / {card.stage}",
        "---",
        f"# {card.pipeline_name} / {card.stage}",
        "",
        card.description or "Synthetic data written by synthkd.",
        "",
        f"Format: **{card.fmt}**. Load with `datasets.load_from_disk('<this directory>')` or read `data.jsonl`.",
        f"Columns: {', '.join(f'`{c}`' for c in columns) or '(none)'}",
        "",
        "## Counts",
        *[f"- {k}: {v}" for k, v in card.counts.items()],
        "",
        "## Models",
        *[f"- {k}: `{v}`" for k, v in card.models.items()],
        "",
        "## Prompt templates (sha256 prefix)",
        *[f"- `{k}`: {v}" for k, v in card.templates.items()],
        "",
        "## Pipeline",
        "```yaml",
        card.pipeline_yaml.rstrip(),
        "```",
        "",
    ]
    return scrub("\n".join(lines))  # the YAML and the models' URLs may carry credentials
