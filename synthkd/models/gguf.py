"""A `.gguf` file -> a plain transformers directory (config, float32 weights, tokenizer, chat template).

transformers dequantizes GGUF on load, but the loaded config keeps `quantization_config` and then
refuses `save_pretrained`; so the weights are moved into a fresh model built from the config without
that key. The result is cached under SYNTHKD_HOME/models/gguf-<sha256 of the file>, so it is
converted once per machine and its identity follows the file's content, not its path.
"""

from __future__ import annotations

import struct
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from synthkd.hashing import file_digest
from synthkd.models.store import ModelCard, build_once, save_weights, write_marker

CONVERTER_VERSION = "1"


def gguf_digest(path: Path) -> str:
    """sha256 of the GGUF file (its converted directory's identity)."""
    return file_digest(path)


# GGUF metadata value types: fixed-size ones by struct format; 8 is a string, 9 an array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def block_count(path: Path) -> int | None:
    """The model's layer count from the GGUF header (`<architecture>.block_count`), read without loading
    weights or the gguf package; None when the header does not say or cannot be read."""
    st = path.stat()
    return _block_count(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=32)
def _block_count(path: str, size: int, mtime_ns: int) -> int | None:
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                return None
            _version, _tensors, count = struct.unpack("<IQQ", f.read(20))
            meta = {}
            for _ in range(count):
                key = _string(f)
                meta[key] = _value(f, struct.unpack("<I", f.read(4))[0])
    except (OSError, struct.error, UnicodeDecodeError, ValueError):
        return None
    value = meta.get(f"{meta.get('general.architecture')}.block_count")
    return value if isinstance(value, int) else None


def _string(f: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", f.read(8))
    return f.read(n).decode("utf-8")


def _value(f: BinaryIO, kind: int) -> object:
    """One metadata value; arrays are skipped over (None), they are the tokenizer's vocabulary."""
    if kind in _SCALARS:
        fmt = "<" + _SCALARS[kind]
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
    if kind == 8:
        return _string(f)
    if kind == 9:
        item, n = struct.unpack("<IQ", f.read(12))
        if item in _SCALARS:
            f.seek(n * struct.calcsize("<" + _SCALARS[item]), 1)
        else:
            for _ in range(n):
                _value(f, item)
        return None
    raise ValueError(f"unknown GGUF value type {kind}")


def converted_dir(home: Path, path: Path) -> Path:
    """The converted directory for a GGUF file, converting it on first use (safe against concurrent builders)."""
    sha = gguf_digest(path)
    target = home / "models" / f"gguf-{sha[:16]}-v{CONVERTER_VERSION}"
    return build_once(target, lambda tmp: _convert(path, tmp, sha))


@contextmanager
def _parsed_once() -> Iterator[None]:
    """While converting: one parse of the file and one tensor-name map, shared by every reader.

    transformers parses the GGUF file three times (tokenizer, config, weights: about 11 s each for SmolLM2's 49k-token
    vocabulary here) and builds the same tensor-name map for every submodule (397 times, 12 s); the conversion took
    43 s, 34 of them in these repeats. Both objects are read-only (the reader is a read-only memory map), so sharing
    them changes nothing in the result. transformers imports both names from `gguf` when it uses them, which is where
    they are replaced for the duration; without the gguf package nothing is replaced."""
    try:
        import gguf
    except ImportError:
        yield
        return
    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}

    def shared_reader(path: Any, mode: str = "r") -> Any:
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = reader_class(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = shared_reader, lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_class, name_map


def _convert(path: Path, out: Path, sha: str) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one line in synthkd's log, not a tensor-by-tensor bar
    with _parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    config_dict = {k: v for k, v in loaded.config.to_dict().items() if k not in ("quantization_config", "_name_or_path")}
    config = AutoConfig.for_model(**config_dict)
    config.architectures = [type(loaded).__name__]
    model = type(loaded)(config)
    save_weights(model, loaded.state_dict(), out, f"GGUF conversion of {path}")
    tokenizer.save_pretrained(str(out))
    write_marker(out, f"gguf:{sha}:v{CONVERTER_VERSION}", ModelCard(source=str(path), sha256=sha, kind="gguf",
                                                                    parameters=sum(p.numel() for p in model.parameters())))
