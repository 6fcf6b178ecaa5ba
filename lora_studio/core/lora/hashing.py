"""LoRA hashes as kohya sd-scripts and AUTOMATIC1111 compute them.

`sshs_model_hash` (the "addnet" hash) is the sha256 of the file bytes after the safetensors
header: the tensor data only, so adding metadata (including the hash itself) does not change
it. A1111 shows its first 12 hex digits as the LoRA's short hash ("Lora hashes" in PNG info).
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from pathlib import Path
from typing import BinaryIO

_BLOCK = 1024 * 1024


def _data_hash(handle: BinaryIO) -> str:
    handle.seek(0)
    (header_len,) = struct.unpack("<Q", handle.read(8))
    handle.seek(8 + header_len)
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(_BLOCK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def sshs_model_hash(path_or_bytes: str | os.PathLike[str] | bytes) -> str:
    """sha256 (hex) of the bytes after the safetensors header of a file or serialized bytes."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return _data_hash(io.BytesIO(bytes(path_or_bytes)))
    from lora_studio.core.lora.sft import read_header

    read_header(path_or_bytes)  # a clear error for a file that is not safetensors
    with open(path_or_bytes, "rb") as handle:
        return _data_hash(handle)


def sshs_legacy_hash(data: bytes) -> str:
    """kohya's legacy hash: sha256 of 64 KiB at offset 1 MiB of the serialized file, 8 hex.
    kohya computes it over the tensors serialized with only the `ss_*` metadata."""
    return hashlib.sha256(bytes(data[0x100000:0x110000])).hexdigest()[:8]


def short_hash(path: str | os.PathLike[str]) -> str:
    """The 12 hex digits A1111 shows for a LoRA (first 12 of `sshs_model_hash`)."""
    return sshs_model_hash(Path(path))[:12]
