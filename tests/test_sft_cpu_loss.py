"""The CPU loss path of SFT (synthkd/train/sft.py): on a machine without a GPU synthkd trains with the model's own
NLL instead of TRL's fused LM head, because it is faster there; it must be the same loss, gradient accumulation and
answer-only masking included, and TRL's trainer must stay where the two would differ."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthkd.models.resolve import resolve_model
from synthkd.train.common import load_for_training
from synthkd.train.sft import _trainer_class, training_examples
from tests.conftest import REPO

pytestmark = [pytest.mark.needs_torch, pytest.mark.needs_trl]

ROWS = [{"messages": [{"role": "user", "content": f"Name the colour number {i}."},
                      {"role": "assistant", "content": f"Colour {i} is {'red' if i % 2 else 'blue'}, and {i * 3} is thrice it."}]}
        for i in range(8)]


def _trainer(cls: type, base: str, out: Path, **args: object) -> object:
    from datasets import Dataset
    from trl import SFTConfig

    model, tokenizer = load_for_training(base, 0)
    config = SFTConfig(output_dir=str(out), report_to=[], bf16=False, per_device_train_batch_size=4, max_length=64,
                       completion_only_loss=True, **args)
    return cls(model=model, args=config, train_dataset=Dataset.from_list(training_examples(ROWS, True)), processing_class=tokenizer)


def test_the_cpu_loss_is_trls_loss_on_the_answer_tokens(tmp_path: Path, synthkd_home: Path) -> None:
    import torch
    from trl import SFTConfig, SFTTrainer

    base = resolve_model("tiny:student", synthkd_home, REPO)
    cpu_class = _trainer_class(SFTConfig(output_dir=str(tmp_path / "c"), report_to=[], bf16=False))
    assert cpu_class is not SFTTrainer and issubclass(cpu_class, SFTTrainer)
    ours, trls = _trainer(cpu_class, base, tmp_path / "a"), _trainer(SFTTrainer, base, tmp_path / "b")
    batch = next(iter(ours.get_train_dataloader()))  # type: ignore[attr-defined]
    assert (batch["labels"] == -100).any() and (batch["labels"] != -100).any()  # prompt masked, answer scored
    tokens = int((batch["labels"][:, 1:] != -100).sum())
    for items in (None, torch.tensor(2 * tokens)):  # alone, and as half of a 2-step accumulation
        with torch.no_grad():
            a = ours.compute_loss(ours.model, dict(batch), num_items_in_batch=items)  # type: ignore[attr-defined]
            b = trls.compute_loss(trls.model, dict(batch), num_items_in_batch=items)  # type: ignore[attr-defined]
        assert float(a) == pytest.approx(float(b), rel=1e-4)


def test_trls_trainer_stays_where_the_losses_would_differ(tmp_path: Path) -> None:
    from trl import SFTConfig, SFTTrainer

    for extra in ({"loss_type": "dft"}, {"label_smoothing_factor": 0.1}, {"padding_free": True}):
        assert _trainer_class(SFTConfig(output_dir=str(tmp_path), report_to=[], bf16=False, **extra)) is SFTTrainer, extra


def test_freeze_embeddings_trains_the_layers_only(tmp_path: Path, synthkd_home: Path) -> None:
    from safetensors.torch import load_file

    from synthkd.train.sft import train_sft

    base = resolve_model("tiny:student", synthkd_home, REPO)
    args = {"max_steps": 2, "learning_rate": 1e-2, "per_device_train_batch_size": 4, "max_length": 64, "completion_only_loss": True}
    train_sft(ROWS, base, tmp_path / "frozen", sft_args=args, lora=None, seed=0, fingerprint="f", freeze_embeddings=True)
    before, after = load_file(str(Path(base) / "model.safetensors")), load_file(str(tmp_path / "frozen" / "model.safetensors"))
    embed = next(k for k in before if k.endswith("embed_tokens.weight"))
    assert (after[embed] == before[embed]).all()
    moved = [k for k in before if k != embed and k in after and not (after[k] == before[k]).all()]
    assert any(".layers." in k for k in moved), moved


def test_freeze_layers_keeps_the_lowest_layers_as_they_were(tmp_path: Path, synthkd_home: Path) -> None:
    from safetensors.torch import load_file

    from synthkd.errors import ConfigError
    from synthkd.train.sft import train_sft

    base = resolve_model("tiny:student", synthkd_home, REPO)  # two layers
    args = {"max_steps": 2, "learning_rate": 1e-2, "per_device_train_batch_size": 4, "max_length": 64, "completion_only_loss": True}
    train_sft(ROWS, base, tmp_path / "frozen", sft_args=args, lora=None, seed=0, fingerprint="f", freeze_embeddings=True, freeze_layers=1)
    before, after = load_file(str(Path(base) / "model.safetensors")), load_file(str(tmp_path / "frozen" / "model.safetensors"))
    lowest = [k for k in before if ".layers.0." in k]
    upper = [k for k in before if ".layers.1." in k]
    assert lowest and all((after[k] == before[k]).all() for k in lowest)
    assert any(not (after[k] == before[k]).all() for k in upper)
    with pytest.raises(ConfigError, match="more than the model's 2 layers"):
        train_sft(ROWS, base, tmp_path / "too_many", sft_args=args, lora=None, seed=0, fingerprint="g", freeze_layers=3)
