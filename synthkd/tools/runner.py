"""Run one user tool call in its own process: `python -m synthkd.tools.runner module:function` with the arguments as
JSON on stdin; the last line of stdout is `{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`.
`--check module:function` only imports it and checks it is callable (validate does this before any call)."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys
from typing import Any


def _load(spec: str) -> Any:
    module, _, name = spec.partition(":")
    sys.path.insert(0, ".")
    function = getattr(importlib.import_module(module), name)
    if not callable(function):
        raise TypeError(f"{spec} is not callable")
    return function


def main(argv: list[str]) -> int:
    check = argv[:1] == ["--check"]
    spec = argv[-1]
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # what the tool prints is not its result
            function = _load(spec)
            if check:
                print("ok", file=sys.__stdout__)
                return 0
            result = function(**json.loads(sys.stdin.read() or "{}"))
        line = json.dumps({"ok": True, "result": result}, ensure_ascii=False, default=str)
    except Exception as exc:  # noqa: BLE001 (the tool's error, whatever it is, is the call's result)
        if check:
            print(f"{type(exc).__name__}: {exc}")
            return 1
        line = json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, ensure_ascii=False)
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
