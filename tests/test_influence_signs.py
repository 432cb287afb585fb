"""Local data influence on a tiny model: a duplicate of a reference example helps, a corrupted reply
hurts, and the first-order estimate agrees in sign; Spearman on known values."""

from pathlib import Path

import pytest

from benchmarks.influence import datasets, ex
from synthkd.montessori.influence import InfluenceModel, spearman
from synthkd.serve.tiny import tiny_model_dir
from tests.conftest import REPO


def test_spearman_known_values() -> None:
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)  # average ranks for ties


def test_duplicate_helps_corrupted_hurts(synthkd_home: Path) -> None:
    base = tiny_model_dir(synthkd_home, REPO, "student")
    warm, reference, _, _ = datasets(16)
    duplicate = reference[0]
    corrupted = ex(reference[1]["messages"][0]["content"], "zq xv blorp 9381 ##!!")
    model = InfluenceModel(str(base), learning_rate=1e-3, optimizer="sgd", seed=0)
    model.warmup(warm, epochs=10, batch_size=8, learning_rate=0.05)
    exact = model.exact([duplicate, corrupted], reference)
    first = model.first_order([duplicate, corrupted], reference)
    assert exact[0] < 0 < exact[1], exact
    assert first[0] < 0 < first[1], first
    # Restored afterwards: measuring again gives the same numbers.
    assert model.exact([duplicate, corrupted], reference) == pytest.approx(exact)
