"""Checked reading of `.safetensors` files: every problem becomes a LoraFormatError that says
what is wrong with the file, never a raw parser error."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from lora_studio.core.errors import LoraFormatError

_MAX_HEADER = 100 * 1024 * 1024
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
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise LoraFormatError(f"{name} is not a safetensors file (only {size} bytes).",
                                  _FIX_REDOWNLOAD)
        (header_len,) = struct.unpack("<Q", head)
        if header_len == 0 or header_len > _MAX_HEADER:
            raise LoraFormatError(_not_safetensors(name), _FIX_NOT_SFT)
        if header_len > size - 8:
            if _looks_like_json_start(handle):
                raise LoraFormatError(
                    f"{name} is truncated: its header claims {header_len} bytes but the file has "
                    f"only {size - 8} after the length field.", _FIX_REDOWNLOAD)
            raise LoraFormatError(_not_safetensors(name), _FIX_NOT_SFT)
        raw = handle.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LoraFormatError(_not_safetensors(name), _FIX_NOT_SFT) from None
    if not isinstance(header, dict):
        raise LoraFormatError(_not_safetensors(name), _FIX_NOT_SFT)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise LoraFormatError(f"{name}: the safetensors metadata is not a string table.",
                              _FIX_REDOWNLOAD)
    metadata = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    data_size = size - 8 - header_len
    needed = 0
    for key, info in header.items():
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and "dtype" in info
                and "shape" in info):
            raise LoraFormatError(f"{name}: entry {key!r} of the safetensors header is malformed.",
                                  _FIX_REDOWNLOAD)
        needed = max(needed, int(offsets[1]))
    if needed > data_size:
        raise LoraFormatError(
            f"{name} is truncated: its header claims {needed} bytes of tensor data but the file "
            f"holds only {data_size}.", _FIX_REDOWNLOAD)
    return SafetensorsHeader(header_len, header, metadata, size)


_FIX_NOT_SFT = ("LoRA Studio reads LoRAs only as .safetensors (pickled .ckpt/.pt files can run "
                "code when opened). Get the .safetensors version of this LoRA.")


def _not_safetensors(name: str) -> str:
    return f"{name} is not a safetensors file."


def _looks_like_json_start(handle) -> bool:
    first = handle.read(1)
    return first == b"{"


def load_tensors(path: str | os.PathLike[str]):
    """(tensors, header) of a checked safetensors file, on the CPU."""
    import safetensors
    import safetensors.torch

    header = read_header(path)
    try:
        tensors = safetensors.torch.load_file(str(path), device="cpu")
    except (safetensors.SafetensorError, OSError, ValueError) as exc:
        raise LoraFormatError(f"{Path(path).name} could not be read as safetensors: {exc}",
                              _FIX_REDOWNLOAD) from exc
    return tensors, header
