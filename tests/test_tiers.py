"""Test tiers: on a machine without the training or serving extras, the tests that need them are
skipped with the reason and the install command, and nothing else is."""

from __future__ import annotations

import pytest

from tests import conftest


class _Item:
    """The part of a pytest.Item the collection hook uses."""

    def __init__(self, *marks: str) -> None:
        self.marks = [getattr(pytest.mark, name) for name in marks]

    def iter_markers(self):  # noqa: ANN201
        return iter(m.mark for m in self.marks)

    def add_marker(self, marker) -> None:  # noqa: ANN001
        self.marks.append(marker)

    def skip_reasons(self) -> list[str]:
        return [m.mark.kwargs["reason"] for m in self.marks if m.mark.name == "skip"]


def test_missing_extras_skip_only_the_tests_that_need_them(monkeypatch: pytest.MonkeyPatch) -> None:
    present = {"torch", "transformers"}  # torch installed, TRL and vLLM not
    monkeypatch.setattr(conftest, "installed", lambda module: module in present)
    plain, torch_only, trains, serves = _Item(), _Item("needs_torch"), _Item("needs_torch", "needs_trl"), _Item("slow", "needs_vllm")
    conftest.pytest_collection_modifyitems(None, [plain, torch_only, trains, serves])  # type: ignore[arg-type, list-item]
    assert plain.skip_reasons() == [] and torch_only.skip_reasons() == []
    assert trains.skip_reasons() == ["needs trl: not installed (pip install -e '.[train]' / make setup)"]
    assert len(serves.skip_reasons()) == 1 and serves.skip_reasons()[0].startswith("needs vllm: not installed (")

    present.clear()  # a machine with neither: one reason naming everything missing
    trains = _Item("needs_torch", "needs_trl")
    conftest.pytest_collection_modifyitems(None, [trains])  # type: ignore[arg-type, list-item]
    assert trains.skip_reasons() == ["needs torch, transformers, trl: not installed (pip install -e '.[train]' / make setup)"]


def test_installed_finds_without_importing(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    assert conftest.installed("json") and not conftest.installed("synthkd_no_such_module")
    monkeypatch.setitem(sys.modules, "trl", None)  # how a blocked import looks
    assert not conftest.installed("trl")


def test_markers_are_registered(pytestconfig: pytest.Config) -> None:
    registered = " ".join(pytestconfig.getini("markers"))
    for marker in conftest.NEEDS:
        assert f"{marker}:" in registered
