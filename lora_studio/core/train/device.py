"""Which device and precision a training run uses: pure, testable logic.

Rules
-----
* "auto": a CUDA GPU when there is one, else Apple MPS, else the CPU.
* CUDA: fp16 / bf16 autocast (bf16 only when the GPU supports it), the frozen base weights are
  stored in that half type to save memory while the LoRA weights stay fp32; SDPA attention
  (diffusers' default processor on torch 2) and TF32 matmuls are switched on.
* MPS: fp32 or fp16 autocast (no bf16 on most Apple GPUs in torch).
* CPU: fp32. fp16 is refused (CPU autocast has no fp16 training path worth using).
  bf16 on the CPU is *allowed*: torch's CPU autocast supports it and accelerate runs it, it halves
  activation memory, and on CPUs with AVX512-BF16/AMX it is faster; on older CPUs it is slower
  than fp32, so the choice carries a note saying so. The base weights stay fp32 on the CPU.

`select_device` never touches a GPU itself when availability is passed in, so tests fake it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lora_studio.core.errors import DeviceError


@dataclass
class DeviceChoice:
    kind: str  # "cuda" | "mps" | "cpu"
    mixed_precision: str  # "no" | "fp16" | "bf16"
    name: str = ""  # e.g. "NVIDIA GeForce RTX 4090"
    notes: list[str] = field(default_factory=list)  # things the user should know (logged)

    @property
    def weight_dtype_name(self) -> str:
        """dtype of the frozen base weights: half on CUDA with mixed precision, else fp32."""
        if self.kind == "cuda" and self.mixed_precision in ("fp16", "bf16"):
            return {"fp16": "float16", "bf16": "bfloat16"}[self.mixed_precision]
        return "float32"

    @property
    def use_cpu(self) -> bool:
        return self.kind == "cpu"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(requested: str = "auto", mixed_precision: str = "no", *,
                  cuda_available: bool | None = None, mps_available: bool | None = None,
                  bf16_supported: bool | None = None) -> DeviceChoice:
    """Pick the training device for `requested` ("auto", "cuda", "mps", "cpu") and check that
    `mixed_precision` ("no", "fp16", "bf16") works there. Raises DeviceError with what to do."""
    import torch

    cuda = _cuda_available() if cuda_available is None else cuda_available
    mps = _mps_available() if mps_available is None else mps_available
    key = "train.mixed_precision"
    if requested == "auto":
        kind = "cuda" if cuda else "mps" if mps else "cpu"
    elif requested == "cuda" and not cuda:
        raise DeviceError("train.device: \"cuda\" was asked for, but no CUDA GPU is available.",
                          "Install a CUDA build of PyTorch and the NVIDIA driver, or use "
                          "device = \"auto\" to train on what this machine has.")
    elif requested == "mps" and not mps:
        raise DeviceError("train.device: \"mps\" was asked for, but Apple MPS is not available.",
                          "Use device = \"auto\" (it falls back to the CPU).")
    elif requested in ("cuda", "mps", "cpu"):
        kind = requested
    else:
        raise DeviceError(f"train.device: unknown device {requested!r}.",
                          "Use \"auto\", \"cuda\", \"mps\" or \"cpu\".")

    choice = DeviceChoice(kind=kind, mixed_precision=mixed_precision)
    if kind == "cuda":
        choice.name = torch.cuda.get_device_name(0)
        if mixed_precision == "bf16":
            bf16 = torch.cuda.is_bf16_supported() if bf16_supported is None else bf16_supported
            if not bf16:
                raise DeviceError(f"{key}: bf16 is not supported by this GPU ({choice.name}).",
                                  "Use mixed_precision = \"fp16\" (or \"no\").")
    elif kind == "mps":
        choice.name = "Apple MPS"
        if mixed_precision == "bf16":
            raise DeviceError(f"{key}: bf16 is not supported on Apple MPS.",
                              "Use mixed_precision = \"fp16\" or \"no\".")
    else:
        choice.name = "CPU"
        if mixed_precision == "fp16":
            raise DeviceError(f"{key}: fp16 needs a CUDA GPU; this run is on the CPU.",
                              "Use mixed_precision = \"no\" (fp32) on the CPU, or \"bf16\" if "
                              "your CPU supports it; or train on a machine with an NVIDIA GPU.")
        if mixed_precision == "bf16":
            choice.notes.append("bf16 on the CPU: uses less memory; on CPUs without native bf16 "
                                "(AVX512-BF16 / AMX) it is slower than mixed_precision = \"no\".")
        if cuda or mps:
            choice.notes.append("Training on the CPU although a GPU is available "
                                "(train.device = \"cpu\").")
    return choice


def configure_backends(choice: DeviceChoice) -> None:
    """Global switches for fast training on the chosen device (TF32 matmuls on CUDA)."""
    import torch

    if choice.kind == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
