"""Reads a GGUF file's header: its metadata key/values (arrays left out) and the parameter count
its tensors add up to. Standard library only, so a llama.cpp install needs nothing more; the
tensor data itself is never read."""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GGUF_MAGIC = b"GGUF"

# GGUF value types: struct format of the scalar ones.
_SCALARS: dict[int, str] = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# llama.cpp's llama_ftype (GGUF general.file_type) -> the quantization name Ollama shows.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}


class GGUFError(ValueError):
    """The file is not a GGUF file this reader understands."""


@dataclass(frozen=True)
class GGUFHeader:
    metadata: dict[str, Any]  # scalar and string values; arrays are left out
    parameter_count: int  # elements of every tensor

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    @property
    def quantization(self) -> str:
        file_type = self.metadata.get("general.file_type")
        return FILE_TYPES.get(file_type, "") if isinstance(file_type, int) else ""


class _Cursor:
    def __init__(self, data: mmap.mmap) -> None:
        self.data = data
        self.offset = 0

    def scalar(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.scalar("<Q")
        text = self.data[self.offset : self.offset + length].decode("utf-8", "replace")
        self.offset += length
        return text

    def skip_string(self) -> None:
        length = self.scalar("<Q")  # read before adding: it moves the offset itself
        self.offset += length

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            self.skip_array()
            return None
        raise GGUFError(f"unknown GGUF value type {kind}")

    def skip_array(self) -> None:
        kind, count = self.scalar("<I"), self.scalar("<Q")
        if kind in _SCALARS:
            self.offset += struct.calcsize(_SCALARS[kind]) * count
        elif kind == _STRING:
            for _ in range(count):  # each string has its own length
                self.skip_string()
        else:
            for _ in range(count):
                self.value(kind)


def read_gguf_header(path: Path) -> GGUFHeader:
    """The metadata and parameter count of the GGUF file at `path` (reads the header only)."""
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != GGUF_MAGIC:
            raise GGUFError(f"{path} is not a GGUF file")
        cursor = _Cursor(data)
        cursor.offset = 4
        version = cursor.scalar("<I")
        if version < 2:
            raise GGUFError(f"{path}: GGUF version {version} is too old")
        tensor_count, kv_count = cursor.scalar("<Q"), cursor.scalar("<Q")
        metadata: dict[str, Any] = {}
        for _ in range(kv_count):
            key = cursor.string()
            value = cursor.value(cursor.scalar("<I"))
            if value is not None:
                metadata[key] = value
        parameters = 0
        for _ in range(tensor_count):
            cursor.skip_string()  # name
            dims = [cursor.scalar("<Q") for _ in range(cursor.scalar("<I"))]
            cursor.offset += 4 + 8  # type, data offset
            count = 1
            for dim in dims:
                count *= dim
            parameters += count
        return GGUFHeader(metadata, parameters)
