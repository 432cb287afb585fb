"""The output head on the answer positions only (synthkd.models.heads): the same loss and the same NLL as the
model's full forward, and no shortcut for a model whose logits are more than head(last hidden state)."""

from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.needs_torch]


def _batch(vocab: int):
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # right padding, as TRL's collator pads
    mask[2, 6:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :4] = -100  # the prompt: no loss
    return ids, mask, labels


def _student(home: Path):
    from transformers import AutoModelForCausalLM

    from synthkd.serve.tiny import tiny_model_dir

    return AutoModelForCausalLM.from_pretrained(str(tiny_model_dir(home, REPO, "student")))


def test_answer_head_loss_and_gradients_match_the_models_own(synthkd_home: Path) -> None:
    import torch

    from synthkd.models.heads import answer_head

    model = _student(synthkd_home)
    ids, mask, labels = _batch(model.config.vocab_size)
    head = answer_head(model, ids, mask)
    assert head is not None
    for items in (None, torch.tensor(17)):  # plain mean, and the trainer's count across accumulation steps
        model.zero_grad()
        full = model(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=items).loss
        full.backward()
        want = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        ours = head(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=items)["loss"]
        ours.backward()
        assert torch.allclose(ours, full, rtol=1e-5, atol=1e-6)
        assert all(torch.allclose(a.grad, b, rtol=1e-4, atol=1e-6) for a, b in zip(model.parameters(), want))


def test_a_model_with_scaled_logits_gets_no_shortcut(synthkd_home: Path) -> None:
    from synthkd.models.heads import answer_head

    model = _student(synthkd_home)
    plain = type(model).forward

    def scaled(self, *args, **kwargs):  # e.g. Gemma's soft-capping or Cohere's logit scale
        out = plain(self, *args, **kwargs)
        out.logits = out.logits * 0.5
        return out

    model.forward = scaled.__get__(model)
    ids, mask, _ = _batch(model.config.vocab_size)
    assert answer_head(model, ids, mask) is None


def test_answer_nll_is_the_same_with_and_without_the_shortcut(synthkd_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import math

    import synthkd.models.heads as heads
    from synthkd.scoring.nll import answer_nll
    from synthkd.serve.tiny import tiny_model_dir

    path = str(tiny_model_dir(synthkd_home, REPO, "student"))
    pairs = [("Name a color.", "Blue."), ("What is the capital of France?", "The capital of France is Paris, a large city."),
             ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Count to three."}],
              "One, two, three."), ("Say nothing.", "")]
    fast = answer_nll(path, pairs, batch_size=3)  # batches mix lengths, and come back in the pairs' order
    monkeypatch.setattr(heads, "answer_head", lambda *a, **k: None)
    full = answer_nll(path, pairs, batch_size=3)
    assert len(fast) == len(pairs) and all(math.isfinite(v) for v in fast)
    assert fast == pytest.approx(full, rel=1e-4)
    one_by_one = [answer_nll(path, [p], batch_size=1)[0] for p in pairs]
    assert fast == pytest.approx(one_by_one, rel=1e-4)


def test_a_cut_answer_is_not_charged_for_an_end_of_turn(synthkd_home: Path) -> None:
    from synthkd.scoring.nll import answer_nll, cached_answer_nll
    from synthkd.serve.tiny import tiny_model_dir

    path = str(tiny_model_dir(synthkd_home, REPO, "student"))
    pairs = [("Name a color.", "Blue."), ("Describe the sea.", "The sea is wide and")]
    ended, cut = answer_nll(path, pairs), answer_nll(path, pairs, ended=[True, False])
    assert cut[0] == pytest.approx(ended[0], rel=1e-5) and cut[1] != pytest.approx(ended[1], rel=1e-6)
    cache = synthkd_home / "nll-test"
    assert cached_answer_nll(path, pairs, cache, [True, False]) == pytest.approx(cut, rel=1e-5)
    assert cached_answer_nll(path, pairs, cache) == pytest.approx(ended, rel=1e-5)  # not the other's cached figure
