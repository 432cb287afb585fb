"""Local data influence (Montessori-Instruct) on the tiny student: signs, first-order agreement, API.

The reference set is one fixed pattern, "Is X a country?" -> "Yes, it is a country.", whose reply
the tiny random student can learn from the warm-up (16 other countries plus two generic pairs)
without memorising facts. Once it has, a duplicate of a reference example is helpful (influence
< 0), and a wrong, unrelated reply to a reference question ("Bananas") takes probability from
"Yes, it is a country." and is harmful (> 0). These settings keep both signs, in the exact and the
first-order values, and a rank correlation of at least 0.9 between them, on each of eight builds
of the tiny student seen so far (a build depends on the repo's data and prompts; at the eighth, new
prompts, a warm-up rate of 0.05 left first order calling the wrong reply helpful: it is 0.1 since).

The tests run torch on one thread: on a busy two-core machine, two spinning OpenMP threads made
the same warm-up take 50 s instead of 3 s (the numbers do not depend on the thread count).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from synthkd.montessori.influence import InfluenceModel, encode_example, spearman
from synthkd.serve.tiny import tiny_model_dir

REPO = Path(__file__).resolve().parent.parent

COUNTRIES = ["France", "Japan", "Italy", "Spain", "Egypt", "Kenya", "Peru", "Canada"]
WARM_COUNTRIES = ["Germany", "Norway", "Cuba", "Greece", "India", "Chile", "Brazil", "Mexico",
                  "Sweden", "Poland", "Ghana", "Nepal", "Iran", "Fiji", "Mali", "Laos"]


def ex(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


REFERENCE = [ex(f"Is {c} a country?", "Yes, it is a country.") for c in COUNTRIES]
WARMUP = [ex(f"Is {c} a country?", "Yes, it is a country.") for c in WARM_COUNTRIES] + [
    ex("Name a color.", "Blue is a color."), ex("Say hello.", "Hello there!")]
DUPLICATE = REFERENCE[0]
WRONG = ex(REFERENCE[0]["messages"][0]["content"], "Bananas")
CANDIDATES = [
    DUPLICATE,
    WRONG,
    ex(REFERENCE[0]["messages"][0]["content"], "No, never at all"),
    ex("Name an animal.", "A cat is an animal."),
    ex("Say goodbye.", "Goodbye, friend!"),
]


@pytest.fixture(autouse=True)
def one_thread():
    try:
        import torch
    except ImportError:  # the tests that need torch are skipped (needs_torch); spearman needs none
        yield
        return

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def warm_model(home: Path, optimizer: str = "sgd", lr: float = 1e-3, warmup_lr: float = 0.1) -> InfluenceModel:
    base = tiny_model_dir(home, REPO, "student")
    model = InfluenceModel(str(base), learning_rate=lr, optimizer=optimizer, seed=0)
    stats = model.warmup(WARMUP, epochs=25, batch_size=4, learning_rate=warmup_lr)
    assert stats["steps"] == 25 * 5 and math.isfinite(stats["loss"])
    return model


def test_spearman_known_values() -> None:
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([0.1, 5.0, 2.0, 7.0], [1, 3, 2, 4]) == pytest.approx(1.0)  # only ranks matter
    # Ties share their average rank: [1, 2.5, 2.5, 4] against [1, 2, 3, 4] gives 3 / sqrt(10).
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(3 / math.sqrt(10))
    assert spearman([1, 1, 2, 2], [2, 2, 1, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))  # a constant side has no ranking
    assert math.isnan(spearman([1], [2]))
    with pytest.raises(ValueError):
        spearman([1, 2], [1, 2, 3])


@pytest.mark.needs_torch
def test_encode_masks_prompt_and_truncates(synthkd_home: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir(synthkd_home, REPO, "student")))
    ids, labels = encode_example(tok, REFERENCE[0], max_length=256)
    assert len(ids) == len(labels)
    n_prompt = labels.index(next(x for x in labels if x != -100))
    assert all(x == -100 for x in labels[:n_prompt]) and labels[n_prompt:] == ids[n_prompt:]
    assert tok.decode(ids[:n_prompt]).endswith("<|assistant|>\n")
    assert tok.decode(ids[n_prompt:]).startswith("Yes, it is a country.<|end|>")
    short_ids, short_labels = encode_example(tok, REFERENCE[0], max_length=n_prompt + 2)
    assert short_ids == ids[: n_prompt + 2] and short_labels == labels[: n_prompt + 2]
    with pytest.raises(ValueError):
        encode_example(tok, {"messages": [{"role": "user", "content": "no reply"}]}, 256)


@pytest.mark.needs_torch
def test_exact_and_first_order_signs(synthkd_home: Path) -> None:
    model = warm_model(synthkd_home)
    before = model.reference_loss(REFERENCE)
    exact = model.exact(CANDIDATES, REFERENCE)
    assert model.reference_loss(REFERENCE) == before  # the warm-up state is restored afterwards
    assert model.exact(CANDIDATES, REFERENCE) == exact  # and every candidate starts from it
    first = model.first_order(CANDIDATES, REFERENCE)
    assert all(math.isfinite(x) for x in exact + first)
    assert exact[0] < 0 and first[0] < 0, (exact, first)  # the duplicate helps
    assert exact[1] > 0 and first[1] > 0, (exact, first)  # the wrong reply hurts
    # With SGD, first order is exact up to O(lr^2): close on the duplicate, and the same ranking.
    assert first[0] == pytest.approx(exact[0], rel=0.3)
    assert spearman(exact, first) >= 0.8


@pytest.mark.needs_torch
def test_first_order_engines_projection_and_parameter_sets(synthkd_home: Path) -> None:
    model = warm_model(synthkd_home)
    jvp = model.first_order(CANDIDATES, REFERENCE, engine="jvp", batch_size=2)
    grad = model.first_order(CANDIDATES, REFERENCE, engine="grad")
    scale = max(abs(x) for x in grad)
    assert jvp == pytest.approx(grad, abs=1e-3 * scale)
    # The same projection through either engine: <P g_ref, P g_c> / k either way.
    pj = model.first_order(CANDIDATES, REFERENCE, projection_dim=64, engine="jvp")
    pg = model.first_order(CANDIDATES, REFERENCE, projection_dim=64, engine="grad")
    assert pj == pytest.approx(pg, abs=1e-3 * max(abs(x) for x in pg))
    assert model.first_order(CANDIDATES, REFERENCE, projection_dim=64) == pytest.approx(pg, abs=1e-3 * scale)  # seeded
    assert pj != pytest.approx(jvp, rel=1e-6)  # a sketch, not the full dot product

    names = {n for n, _ in model.selected_parameters("lora")}
    assert names and all(n.endswith(("q_proj.weight", "v_proj.weight")) for n in names)
    last = {n for n, _ in model.selected_parameters("last_layers")}
    assert any(".layers.1." in n for n in last) and not any(".layers.0." in n for n in last)
    assert "model.norm.weight" in last and "model.embed_tokens.weight" in last  # tied output embedding
    for params in ("lora", "last_layers"):
        values = model.first_order(CANDIDATES, REFERENCE, params=params)
        assert values[0] < 0 and all(math.isfinite(x) for x in values)
    with pytest.raises(ValueError):
        model.first_order(CANDIDATES, REFERENCE, params="everything")


@pytest.mark.needs_torch
def test_adamw_restores_optimizer_state(synthkd_home: Path) -> None:
    """AdamW's moments from the warm-up are restored before every one-step update."""
    model = warm_model(synthkd_home, optimizer="adamw", lr=1e-4, warmup_lr=1e-3)
    assert model.optimizer.state_dict()["state"]  # the warm-up left moments behind
    first = model.exact(CANDIDATES[:3], REFERENCE)
    assert model.exact(CANDIDATES[:3], REFERENCE) == first
    assert all(math.isfinite(x) for x in first) and len(set(first)) == len(first)


@pytest.mark.needs_torch
def test_bad_arguments(synthkd_home: Path) -> None:
    base = str(tiny_model_dir(synthkd_home, REPO, "student"))
    with pytest.raises(ValueError):
        InfluenceModel(base, optimizer="lion")
    with pytest.raises(ValueError):
        InfluenceModel(base, learning_rate=0)


@pytest.mark.needs_torch
def test_stage_passes_first_order_options(synthkd_home: Path) -> None:
    """influence_params / influence_projection_dim / warmup_lr in a montessori stage reach the estimate."""
    from types import SimpleNamespace

    from synthkd.montessori.config import MontessoriStage
    from synthkd.montessori.loop import MontessoriRun

    base = str(tiny_model_dir(synthkd_home, REPO, "student"))
    cfg = MontessoriStage(name="m", type="montessori", input="seeds", reference="ref", student_model=base, influence="first_order",
                          influence_params="lora", influence_projection_dim=64, influence_lr=1e-3, warmup_lr=0.05, warmup_epochs=3)
    rt = SimpleNamespace(servers=SimpleNamespace(resolve_model_path=lambda p: p), config=SimpleNamespace(seed=0))
    ref_rows = [{"instruction": r["messages"][0]["content"], "response": r["messages"][1]["content"]} for r in REFERENCE]
    run = MontessoriRun(cfg, rt, None, [], ref_rows, [])  # type: ignore[arg-type]
    got = run._influence(CANDIDATES, WARMUP)

    model = InfluenceModel(base, learning_rate=1e-3, seed=0)
    model.warmup(WARMUP, epochs=3, learning_rate=0.05)
    assert got == pytest.approx(model.first_order(CANDIDATES, REFERENCE, params="lora", projection_dim=64), rel=1e-5)
    assert got != pytest.approx(model.first_order(CANDIDATES, REFERENCE), rel=1e-3)  # not the default all-parameter estimate
