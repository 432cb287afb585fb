"""The real-teacher data: a training pool and a held-out set that do not overlap."""

import json
from collections import Counter

from synthkd.stages.decontaminate import DecontaminateStage
from synthkd.stages.decontaminate import decontaminate
from tests.conftest import REPO


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (REPO / "data" / "distill" / name).read_text().splitlines() if line.strip()]


def test_pool_and_heldout_are_disjoint_and_sized() -> None:
    pool, heldout = _rows("pool.jsonl"), _rows("heldout.jsonl")
    assert len(pool) >= 400 and len(heldout) >= 150
    assert not {r["instruction"].lower() for r in pool} & {r["instruction"].lower() for r in heldout}
    # synthkd's own decontamination (13-gram overlap, as in the rationale pipeline) drops nothing.
    stage = DecontaminateStage(name="d", type="decontaminate", input="pool", against="heldout")
    kept, dropped, _ = decontaminate(stage, pool, heldout)
    assert not dropped and len(kept) == len(pool)
    families = Counter(r["family"] for r in heldout)
    for family in ("antonym", "capital", "plural", "sentiment"):
        assert families[family] >= 20 and all(r["gold"] for r in heldout if r["family"] == family)
    assert all(r["gold"] is None for r in pool + heldout if r["family"] in ("list", "definition", "open"))


def _generator():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_distill", REPO / "data" / "distill" / "make_distill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_generalisation_sets_are_reproducible_gold_and_apart_from_the_pool(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """heldout_phrasings.jsonl (pool families, phrasings the pool never uses) and heldout_families.jsonl (families the
    pool lacks) are what the generator writes, every row with gold, none sharing an instruction or a 13-gram with
    the pool; pool.jsonl and heldout.jsonl are unchanged by them."""
    gen = _generator()
    pool, held, held_by_family = gen.build_with_items()
    phrasings, families = gen.build_phrasings(held_by_family), gen.build_new_families()
    gen.check_generalisation(pool, phrasings, families)
    for name, rows in (("pool.jsonl", pool), ("heldout.jsonl", held), ("heldout_phrasings.jsonl", phrasings),
                       ("heldout_families.jsonl", families)):
        gen.write(tmp_path / name, rows)
        assert (tmp_path / name).read_bytes() == (REPO / "data" / "distill" / name).read_bytes(), name
    on_disk = _rows("heldout_phrasings.jsonl")
    held_gold = {(r["family"], r["gold"]) for r in _rows("heldout.jsonl") if r["gold"]}
    assert {(r["family"], r["gold"]) for r in on_disk} <= held_gold  # the held-out facts, asked differently
    new = _rows("heldout_families.jsonl")
    assert not {r["family"] for r in new} & {r["family"] for r in _rows("pool.jsonl")}
    assert all(r["gold"] for r in new) and min(Counter(r["family"] for r in new).values()) >= 20
