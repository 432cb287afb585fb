"""The real-teacher data: a training pool and a held-out set that do not overlap."""

import json
from collections import Counter

from synthkd.config.stages import DecontaminateStage
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
