"""The SKD critic: a small sequence classifier that accepts or rejects (head, relation, tail) triples (the choice
of its acceptance threshold, the split and its text are in `threshold.py`, re-exported here).

Training imports torch, transformers and accelerate only inside its functions. Training runs in this
process, or (`distributed=True`, under `accelerate launch` through synthkd.train.launch, job kind
"classifier") on every process of the group, each on its share of every batch.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict
from typing_extensions import TypedDict  # pydantic reads typing.TypedDict only from Python 3.12

from synthkd.skd.threshold import choose_threshold, nli_text, pr_curve, train_val_split

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

    from synthkd.records import TrainMetrics

__all__ = ["pr_curve", "choose_threshold", "nli_text", "train_val_split", "train_classifier", "score_texts",
           "LabelledPair", "ClassifierArgs", "ClassifierMetrics", "train_from_args"]


class LabelledPair(TypedDict):
    """One classifier example: the NLI-framed triple (see `nli_text`) and whether it is accepted."""

    premise: str
    hypothesis: str
    label: bool


class ClassifierArgs(BaseModel):
    """What classifier training takes besides its training rows, seed and base weights (the launcher's "classifier"
    job carries it; all of it enters the job's fingerprint): `train_classifier`'s arguments and the validation items
    whose accuracy the checkpoint's metrics report."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = 3
    learning_rate: float = 5e-4
    batch_size: int = 16  # examples a process takes per step
    max_length: int = 128
    val: list[LabelledPair] = []


class ClassifierMetrics(TypedDict):
    """What `train_classifier` reports (train_metrics.json, beside TrainMetrics' own fields)."""

    train_examples: int
    val_examples: int
    val_accuracy: float | None  # None without val items
    epochs: int
    train_loss: float  # mean loss of the last epoch (over every process)
    seconds: float


class _Epoch(TypedDict):
    """One epoch in the checkpoint's train_log.jsonl (what the run's log shows)."""

    epoch: int
    step: int
    loss: float
    learning_rate: float


# ---------------------------------------------------------------------------------------------------
# Training part (torch / transformers imported lazily)
# ---------------------------------------------------------------------------------------------------


def _check_items(items: list[LabelledPair], what: str) -> None:
    for i, it in enumerate(items):
        if not isinstance(it, dict) or not {"premise", "hypothesis", "label"} <= set(it):
            raise ValueError(f"{what}[{i}] must be a dict with premise, hypothesis and label, got {it!r}")


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load/save progress bars and the expected "newly initialized head"
    warning for the duration, restoring the caller's settings afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer of {path} has neither a pad nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def _encode(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int):
    return tokenizer(
        [p for p, _ in pairs], [h for _, h in pairs],
        truncation=True, max_length=max_length, padding=True, return_tensors="pt",
    )


def _accept_probs(model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int, max_length: int, device) -> list[float]:
    import torch

    model.eval()
    out: list[float] = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            batch = _encode(tokenizer, pairs[start:start + batch_size], max_length).to(device)
            logits = model(**batch).logits.float()
            out.extend(torch.softmax(logits, dim=-1)[:, 1].tolist())
    return out


def train_classifier(
    train: list[LabelledPair],
    val: list[LabelledPair],
    base_model: str,
    out_dir: Path,
    *,
    epochs: int = 3,
    learning_rate: float = 5e-4,
    batch_size: int = 16,
    max_length: int = 128,
    seed: int = 0,
    fingerprint: str | None = None,
    distributed: bool = False,
) -> ClassifierMetrics:
    """Fine-tune `base_model` with a fresh 2-way head on {"premise", "hypothesis", "label"} items.

    A plain torch loop (AdamW, linear decay, seeded shuffling), on CUDA when present, else the CPU.
    It reseeds torch's and `random`'s global generators with `seed`, so the head's initialisation and
    the run are repeatable.
    `distributed`: run as one process of an `accelerate launch` group (synthkd.train.worker): every process
    takes its share of each step's examples (`batch_size` each, so N processes take 1/N of the steps), the
    gradients are averaged across them, and only the main process writes the checkpoint.
    Model, tokenizer, train_metrics.json, the epochs' record (train_log.jsonl) and, when given, `fingerprint`
    (synthkd_fingerprint.txt) are written to out_dir via a sibling ".tmp" directory renamed into place.
    Returns {"train_examples", "val_examples", "val_accuracy" (None without val items), "epochs",
    "train_loss" (mean loss of the last epoch), "seconds"}.
    """
    if not train:
        raise ValueError("train_classifier needs at least one training item")
    if epochs < 1 or batch_size < 1 or max_length < 2:
        raise ValueError(f"epochs, batch_size must be >= 1 and max_length >= 2 (got {epochs}, {batch_size}, {max_length})")
    _check_items(train, "train")
    _check_items(val, "val")
    with _quiet_transformers():
        return _train(train, val, str(base_model), Path(out_dir), epochs, learning_rate, batch_size, max_length, seed, fingerprint,
                      _accelerator() if distributed else None)


def train_from_args(train: list[LabelledPair], base_model: str, out_dir: Path, args: ClassifierArgs, *, seed: int, fingerprint: str,
                    distributed: bool = False) -> "TrainMetrics":
    """`train_classifier` as the launcher's "classifier" job runs it (here or in each worker), its metrics as
    every training run reports them."""
    from synthkd.records import TrainMetrics

    metrics = train_classifier(train, list(args.val), base_model, out_dir, epochs=args.epochs, learning_rate=args.learning_rate,
                               batch_size=args.batch_size, max_length=args.max_length, seed=seed, fingerprint=fingerprint,
                               distributed=distributed)
    return TrainMetrics.model_validate(metrics)


def _accelerator() -> "Accelerator":
    """This process's place in the `accelerate launch` group (DDP; gloo on a CPU, where the launcher sets ACCELERATE_USE_CPU)."""
    from accelerate import Accelerator

    return Accelerator()


def _shard(batch: list[int], rank: int, world: int) -> list[int]:
    """Process `rank`'s share of one step's examples (all of them in one process). A process the last step leaves
    without one repeats an example, as accelerate's even batches do: every process must take every step."""
    return batch[rank::world] or [batch[rank % len(batch)]]


def _train(
    train: list[LabelledPair], val: list[LabelledPair], base_model: str, out_dir: Path,
    epochs: int, learning_rate: float, batch_size: int, max_length: int, seed: int,
    fingerprint: str | None = None, accelerator: "Accelerator | None" = None,
) -> ClassifierMetrics:
    import torch
    from transformers import AutoModelForSequenceClassification

    started = time.monotonic()
    # In one process (accelerator None) this is the loop as it always was: same seed, same weights.
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    device = accelerator.device if accelerator is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    random.seed(seed)
    torch.manual_seed(seed)
    tokenizer = _load_tokenizer(base_model)
    model = AutoModelForSequenceClassification.from_pretrained(
        base_model, num_labels=2, id2label={0: "reject", 1: "accept"}, label2id={"reject": 0, "accept": 1},
    )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device)

    pairs = [(it["premise"], it["hypothesis"]) for it in train]
    targets = torch.tensor([1 if it["label"] else 0 for it in train], dtype=torch.long)
    step_size = batch_size * world  # examples per step, over every process
    steps_per_epoch = math.ceil(len(train) / step_size)
    total_steps = steps_per_epoch * epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    if accelerator is not None:
        model, optimizer = accelerator.prepare(model, optimizer)  # DDP: gradients averaged across the processes
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total_steps))
    clip = accelerator.clip_grad_norm_ if accelerator is not None else torch.nn.utils.clip_grad_norm_
    generator = torch.Generator().manual_seed(seed)  # the same order on every process; each takes its share
    last_epoch_loss = float("nan")
    record: list[_Epoch] = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator).tolist()
        losses: list[float] = []
        for start in range(0, len(order), step_size):
            idx = _shard(order[start:start + step_size], rank, world)
            batch = _encode(tokenizer, [pairs[i] for i in idx], max_length).to(device)
            loss = torch.nn.functional.cross_entropy(model(**batch).logits.float(), targets[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            if accelerator is not None:
                accelerator.backward(loss)
            else:
                loss.backward()
            clip(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        last_epoch_loss = sum(losses) / len(losses)
        if accelerator is not None:  # every process's mean (each took the same number of steps)
            last_epoch_loss = float(accelerator.reduce(torch.tensor(last_epoch_loss, device=device), reduction="mean"))
        record.append({"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "loss": last_epoch_loss,
                       "learning_rate": scheduler.get_last_lr()[0]})
        if accelerator is not None and accelerator.is_main_process:
            print(f"synthkd critic: {json.dumps(record[-1])}", flush=True)  # the run's log

    val_accuracy: float | None = None
    if val:
        # Every process scores every val item (the same forward passes, so a sharded model's collectives line up).
        probs = _accept_probs(model, tokenizer, [(it["premise"], it["hypothesis"]) for it in val], 64, max_length, device)
        val_accuracy = sum((p >= 0.5) == bool(it["label"]) for p, it in zip(probs, val)) / len(val)

    metrics: ClassifierMetrics = {
        "train_examples": len(train),
        "val_examples": len(val),
        "val_accuracy": val_accuracy,
        "epochs": epochs,
        "train_loss": last_epoch_loss,
        "seconds": round(time.monotonic() - started, 3),
    }
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if accelerator is None:
        _save(model, tokenizer, tmp, out_dir, metrics, record, fingerprint)
    else:
        accelerator.wait_for_everyone()
        state_dict = _gathered_state_dict(accelerator, model)  # a collective where the model is sharded: every process calls it
        if accelerator.is_main_process:
            _save(accelerator.unwrap_model(model), tokenizer, tmp, out_dir, metrics, record, fingerprint, state_dict)
        accelerator.wait_for_everyone()  # no process leaves (and tears the group down) before the checkpoint is in place
    return metrics


def _save(model, tokenizer, tmp: Path, out_dir: Path, metrics: ClassifierMetrics, record: list[_Epoch], fingerprint: str | None,
          state_dict: "dict[str, torch.Tensor] | None" = None) -> None:
    """Write the checkpoint into OUT.tmp (the fingerprint last: its presence means the checkpoint is whole) and
    move it into place."""
    from synthkd.records import TrainMetrics
    from synthkd.train.common import FINGERPRINT_FILE, TRAIN_LOG_FILE, write_metrics

    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save_pretrained(str(tmp), safe_serialization=True, **({"state_dict": state_dict} if state_dict is not None else {}))
    tokenizer.save_pretrained(str(tmp))
    write_metrics(tmp, TrainMetrics.model_validate(metrics))
    (tmp / TRAIN_LOG_FILE).write_text("".join(json.dumps(entry) + "\n" for entry in record))
    if fingerprint is not None:
        (tmp / FINGERPRINT_FILE).write_text(fingerprint)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


def _gathered_state_dict(accelerator: "Accelerator", model) -> "dict[str, torch.Tensor] | None":
    """The full weights gathered from every process where the model is sharded (FSDP, DeepSpeed); None where the
    main process holds the whole model (DDP)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return None
    return accelerator.get_state_dict(model)


def score_texts(model_dir: Path, pairs: list[tuple[str, str]], batch_size: int = 64, max_length: int = 128) -> list[float]:
    """Probability of label 1 (accept) for each (premise, hypothesis), in input order."""
    import torch
    from transformers import AutoModelForSequenceClassification

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not pairs:
        return []
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with _quiet_transformers():
        tokenizer = _load_tokenizer(str(model_dir))
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    return _accept_probs(model, tokenizer, list(pairs), batch_size, max_length, device)
