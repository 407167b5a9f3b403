"""Read what a GGUF file says about itself (architecture, quantization, context length, chat
template, parameter count) from its header, without loading it. Standard library only: the
header's key-value section and tensor list are read, large arrays (the vocabulary) are skipped,
and tensor data is never touched, so this takes milliseconds."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

MAGIC = b"GGUF"

# llama.cpp's llama_ftype: general.file_type -> the quantization people name.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}

# GGUF value types: id -> struct format of a scalar.
_SCALARS: dict[int, str] = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_ARRAY_KEPT = 64  # longer arrays (tokens, merges) are skipped, only their length kept


class GGUFError(ValueError):
    """The file is not a GGUF model, or its header is damaged; the message says which."""


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    version: int
    metadata: dict[str, Any]
    parameter_count: int = 0  # elements of every tensor

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    @property
    def name(self) -> str | None:
        return self.metadata.get("general.name")

    @property
    def quantization(self) -> str | None:
        file_type = self.metadata.get("general.file_type")
        return FILE_TYPES.get(file_type, f"file type {file_type}") if file_type is not None else None

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return int(value) if isinstance(value, int) else None

    @property
    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template")


def is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(4) == MAGIC
    except OSError:
        return False


def read_gguf(path: Path) -> GGUFInfo:
    try:
        with path.open("rb") as file:
            head = file.read(4)
            if head != MAGIC:
                raise GGUFError(f"{path} is not a GGUF file (it starts with {head!r}, a GGUF file with b'GGUF')")
            reader = _Reader(file)
            version = reader.scalar("<I")
            if version == 1:
                raise GGUFError(f"{path} is GGUF version 1, which llama.cpp no longer reads; convert it again")
            tensors = reader.scalar("<Q")
            count = reader.scalar("<Q")
            metadata = {reader.string(): reader.value(reader.scalar("<I")) for _ in range(count)}
            parameters = sum(reader.tensor_elements() for _ in range(tensors))
    except OSError as error:
        raise GGUFError(f"cannot read {path}: {error.strerror}") from None
    except (struct.error, UnicodeDecodeError, EOFError) as error:
        raise GGUFError(f"{path}: the GGUF header is damaged ({error})") from None
    return GGUFInfo(path, version, metadata, parameters)


class _Reader:
    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._readers: dict[int, Callable[[], Any]] = {_STRING: self.string, _ARRAY: self.array}

    def _read(self, size: int) -> bytes:
        data = self._file.read(size)
        if len(data) != size:
            raise EOFError("the file ends inside its header")
        return data

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self._read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self._read(self.scalar("<Q")).decode("utf-8")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        if kind not in self._readers:
            raise EOFError(f"unknown value type {kind}")
        return self._readers[kind]()

    def array(self) -> Any:
        kind, count = self.scalar("<I"), self.scalar("<Q")
        if count <= _ARRAY_KEPT:
            return [self.value(kind) for _ in range(count)]
        if kind in _SCALARS:
            self._file.seek(count * struct.calcsize(_SCALARS[kind]), 1)
        else:
            for _ in range(count):
                self.skip(kind)
        return {"length": count}

    def tensor_elements(self) -> int:
        """One entry of the tensor list (name, dimensions, type, offset): its element count."""
        self._file.seek(self.scalar("<Q"), 1)  # name
        elements = 1
        for _ in range(self.scalar("<I")):
            elements *= self.scalar("<Q")
        self._file.seek(4 + 8, 1)  # type, data offset
        return elements

    def skip(self, kind: int) -> None:
        if kind == _STRING:
            self._file.seek(self.scalar("<Q"), 1)
        elif kind in _SCALARS:
            self._file.seek(struct.calcsize(_SCALARS[kind]), 1)
        else:
            self.array()
