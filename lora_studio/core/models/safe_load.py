"""Reading checkpoint files without ever running code from them.

`.safetensors` is plain data and is always fine. Legacy pickle files (`.ckpt`, `.pt`, `.pth`,
`.bin`) can execute arbitrary code when unpickled, so they are only read with
`torch.load(weights_only=True)` (PyTorch's restricted unpickler that accepts tensors and plain
containers, nothing callable) and a warning is logged. A pickle that needs anything more is
refused with an `UnsafeFileError` telling the user to convert it to `.safetensors`.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

from lora_studio.core.errors import LoraFormatError, ModelLoadError, UnsafeFileError
from lora_studio.core.lora.sft import read_header

logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
CHECKPOINT_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES

_CONVERT_FIX = (
    "Convert the file to .safetensors with a tool you trust (or download the .safetensors version "
    "of the model, which most model sites offer), then load that file instead."
)


def is_pickle_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in PICKLE_SUFFIXES


_FIX_DOWNLOAD = ("The file may be incomplete (an interrupted download) or not a model; "
                 "download it again.")


def _check_safetensors(path: str | Path) -> None:
    """A ModelLoadError saying what is wrong (empty, truncated, not safetensors at all...) with
    a file that is not a whole safetensors file; nothing when it is."""
    try:
        read_header(path)
    except LoraFormatError as exc:  # the same checks as for LoRA files, told for a model
        raise ModelLoadError(exc.what, _FIX_DOWNLOAD) from None


def read_safetensors_header(path: str | Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Key → shape and the string metadata of a `.safetensors` file, without reading tensors."""
    from safetensors import safe_open

    _check_safetensors(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
            metadata = dict(handle.metadata() or {})
    except Exception as exc:  # safetensors raises its own SafetensorError / OSError types
        raise ModelLoadError(
            f"{Path(path).name} is not a readable .safetensors file ({exc}).", _FIX_DOWNLOAD,
        ) from exc
    return shapes, metadata


def load_safetensors(path: str | Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    _check_safetensors(path)
    try:
        return load_file(str(path))
    except Exception as exc:
        raise ModelLoadError(
            f"{Path(path).name} is not a readable .safetensors file ({exc}).", _FIX_DOWNLOAD,
        ) from exc


def load_pickle_weights_only(path: str | Path) -> dict[str, Any]:
    """A legacy pickle checkpoint's state dict, read with PyTorch's weights-only unpickler.

    Nested `{"state_dict": {...}}` wrappers are unwrapped. Non-tensor entries other than
    `global_step` are dropped. Raises `UnsafeFileError` when the file needs more than plain data.
    """
    import pickle

    import torch

    path = Path(path)
    extra = {"mmap": True} if _pickle_container(path) == "zip" else {}
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True, **extra)
    except pickle.UnpicklingError as exc:
        raise UnsafeFileError(
            f"{path.name} is a pickle file that contains more than plain weights (it asks to run "
            "or build Python objects), so LoRA Studio refused to open it: such files can run any "
            "code on your computer.",
            _CONVERT_FIX,
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{path.name} could not be read as a PyTorch checkpoint ({exc}).",
            "The file may be incomplete or not a model; download it again, preferably as "
            ".safetensors.",
        ) from exc
    # only once it loaded: a refused file gets the refusal alone
    logger.warning(
        "%s is a pickle checkpoint: it was read with torch.load(weights_only=True), which refuses "
        "anything but plain tensors. Prefer .safetensors files.", path.name,
    )
    return _unwrap_state_dict(data, path)


def _pickle_container(path: Path) -> str:
    """"zip" (what torch.save writes) or "pickle" (its legacy format, a pickle from the first
    byte); anything else is refused without being handed to an unpickler."""
    if zipfile.is_zipfile(path):
        return "zip"
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head[:1] == b"\x80":  # pickle protocol 2 and later, what torch.save's legacy format is
        return "pickle"
    what = ("is empty (0 bytes)" if not head else
            "is cut off (an incomplete zip archive)" if head.startswith(b"PK") else
            "is neither a zip archive nor a pickle (damaged, or another kind of file)")
    raise ModelLoadError(f"{path.name} is not a readable PyTorch checkpoint: it {what}.",
                         "Download it again, preferably as .safetensors.")


def _unwrap_state_dict(data: Any, path: Path) -> dict[str, Any]:
    import torch

    global_step = data.get("global_step") if isinstance(data, dict) else None
    while isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ModelLoadError(
            f"{path.name} does not hold a state dict (found {type(data).__name__}).",
            "Point LoRA Studio to a Stable Diffusion checkpoint (.safetensors preferred).",
        )
    state = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if global_step is not None and "global_step" not in state:
        state["global_step"] = global_step
    return state


def load_checkpoint_state_dict(path: str | Path) -> dict[str, Any]:
    """The state dict of a checkpoint file: `.safetensors`, or a weights-only legacy pickle."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return load_safetensors(path)
    if suffix in PICKLE_SUFFIXES:
        return load_pickle_weights_only(path)
    raise ModelLoadError(
        f"{path.name}: unsupported checkpoint type {suffix or '(no extension)'}.",
        "Use a .safetensors checkpoint (or a legacy .ckpt/.pt/.pth/.bin), or a diffusers "
        "model folder.",
    )
