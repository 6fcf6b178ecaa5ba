"""Checked reading of `.safetensors` files: every problem becomes a LoraFormatError that says
what is wrong with the file, never a raw parser error."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from lora_studio.core.errors import LoraFormatError

_MAX_HEADER = 100_000_000  # what the safetensors library itself reads at most
_FIX_REDOWNLOAD = "Download or export the file again; it is damaged or incomplete."


@dataclass
class SafetensorsHeader:
    header_len: int  # bytes of JSON after the 8-byte length
    tensors: dict[str, dict]  # name -> {"dtype", "shape", "data_offsets"}
    metadata: dict[str, str]
    file_size: int

    @property
    def data_start(self) -> int:
        return 8 + self.header_len


def read_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Parse and check a safetensors header without loading any tensor."""
    path = Path(path)
    if not path.is_file():
        raise LoraFormatError(f"No LoRA file at {path}.", "Check the path.")
    size = path.stat().st_size
    name = path.name
    if size == 0:
        raise LoraFormatError(f"{name} is empty (0 bytes), not a safetensors file.",
                              _FIX_REDOWNLOAD)
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise LoraFormatError(f"{name} is not a safetensors file (only {size} bytes).",
                                  _FIX_REDOWNLOAD)
        (header_len,) = struct.unpack("<Q", head)
        first = handle.read(1)
        if header_len > _MAX_HEADER and first == b"{":  # refused before any of it is read
            raise LoraFormatError(
                f"{name} is damaged: its safetensors header claims {header_len / 1e6:,.0f} MB, "
                "more than the 100 MB the format allows.", _FIX_REDOWNLOAD)
        if header_len == 0 or header_len > _MAX_HEADER or first != b"{":
            raise LoraFormatError(_not_safetensors(name, head + first), _FIX_NOT_SFT)
        if header_len > size - 8:
            raise LoraFormatError(
                f"{name} is truncated: its header claims {header_len} bytes but the file has "
                f"only {size - 8} after the length field.", _FIX_REDOWNLOAD)
        raw = first + handle.read(header_len - 1)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LoraFormatError(f"{name} is damaged: its safetensors header is not valid JSON.",
                              _FIX_REDOWNLOAD) from None
    if not isinstance(header, dict):
        raise LoraFormatError(f"{name} is damaged: its safetensors header is not a table of "
                              "tensors.", _FIX_REDOWNLOAD)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise LoraFormatError(f"{name}: the safetensors metadata is not a string table.",
                              _FIX_REDOWNLOAD)
    metadata = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    data_size = size - 8 - header_len
    needed = max((_entry_end(name, key, info) for key, info in header.items()), default=0)
    if needed > data_size:
        raise LoraFormatError(
            f"{name} is truncated: its header claims {needed} bytes of tensor data but the file "
            f"holds only {data_size}.", _FIX_REDOWNLOAD)
    return SafetensorsHeader(header_len, header, metadata, size)


# bytes per element of the safetensors dtypes a LoRA can hold
_DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
                "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
                "C64": 8}


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry_end(name: str, key: str, info) -> int:
    """Where tensor `key`'s data ends; a LoraFormatError saying what is wrong with its entry."""
    def bad(problem: str) -> LoraFormatError:
        return LoraFormatError(f"{name}: entry {key!r} of the safetensors header is malformed "
                               f"({problem}).", _FIX_REDOWNLOAD)

    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise bad("it needs a dtype, a shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in _DTYPE_SIZES:
        raise bad(f"tensor type {dtype!r} is not one LoRA Studio can read")
    if not (isinstance(shape, list) and all(_is_count(n) for n in shape)):
        raise bad(f"shape {shape!r} is not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))
            and offsets[0] <= offsets[1]):
        raise bad(f"data_offsets {offsets!r} are not a start and an end")
    count = 1
    for n in shape:
        count *= n
    if offsets[1] - offsets[0] != count * _DTYPE_SIZES[dtype]:
        raise bad(f"shape {shape} of {dtype} needs {count * _DTYPE_SIZES[dtype]} bytes, "
                  f"its data_offsets span {offsets[1] - offsets[0]}")
    return offsets[1]


_FIX_NOT_SFT = ("LoRA Studio reads LoRAs only as .safetensors (pickled .ckpt/.pt files can run "
                "code when opened). Get the .safetensors version of this LoRA.")


# what a file that is not safetensors most likely is, by its first bytes
_MAGIC = [
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"RIFF", "a WebP image or other RIFF file"),
    (b"PK\x03\x04", "a zip archive, e.g. a pickled PyTorch checkpoint (.ckpt/.pt)"),
    (b"\x80", "a pickled file (.ckpt/.pt/.bin)"),
    (b"<", "a web page (HTML), perhaps an error page saved in place of the download"),
]


def _not_safetensors(name: str, head: bytes) -> str:
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return f"{name} is not a safetensors file: it is {kind}."
    text = head.decode("utf-8", errors="replace")
    if all(c.isprintable() or c in "\t\r\n" for c in text) and "\ufffd" not in text:
        return f"{name} is not a safetensors file: it starts like a text file."
    return f"{name} is not a safetensors file."


def load_tensors(path: str | os.PathLike[str]):
    """(tensors, header) of a checked safetensors file, on the CPU."""
    import safetensors
    import safetensors.torch

    header = read_header(path)
    try:
        tensors = _load_file(str(path))
    except (safetensors.SafetensorError, OSError, ValueError) as exc:
        raise LoraFormatError(f"{Path(path).name} could not be read as safetensors: {exc}",
                              _FIX_REDOWNLOAD) from exc
    return tensors, header


def _load_file(path: str) -> dict:
    """Every tensor of a safetensors file, each in its own CPU memory.

    safetensors' default "mmap" backend cuts each tensor out of the mapped file with PyO3's
    `PySlice::new`, which never releases the Python ints it makes for the slice's start and
    stop (pyo3 src/types/slice.rs: `PySlice_New(PyLong_FromSsize_t(start), ...)`, and
    PySlice_New takes references of its own): two ints, ~56 bytes, per tensor on every load,
    for the life of the process. A session that loads LoRAs onto its sliders all day lost
    10 KB to 120 KB a load that way. The "pread" backend (safetensors >= 0.8) reads each
    tensor into a buffer of its own and makes no slice."""
    import inspect

    import safetensors.torch

    if "backend" in inspect.signature(safetensors.torch.load_file).parameters:
        return safetensors.torch.load_file(path, device="cpu", backend="pread")
    return safetensors.torch.load_file(path, device="cpu")  # safetensors < 0.8: mmap only
