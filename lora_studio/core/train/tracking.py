"""kohya's `log_with = "tensorboard"`: the run's curves as TensorBoard event files.

Written under `<output folder>/logs/<name>` (kohya's `logging_dir`): `loss/train`,
`lr/unet` (and `lr/text_encoder`), `grad_norm` each step, `loss/validation` at each validation,
and `weight_norm/<module>` (the Frobenius norm of each LoRA module's update) every
`WEIGHT_NORM_EVERY` steps, the way to see a module run away before the loss shows it. Open
with `tensorboard --logdir <output folder>/logs`. tensorboard is an optional dependency
(`pip install "lora-studio[tensorboard]"`); asking for it without it is a ConfigError before
any model loads.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lora_studio.core.errors import ConfigError

LOG_WITH = ("", "tensorboard")
WEIGHT_NORM_EVERY = 10


def check_available(log_with: str) -> None:
    if log_with != "tensorboard":
        return
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError("train.log_with", "\"tensorboard\" needs the tensorboard package, "
                          "which is not installed.",
                          "pip install tensorboard (or pip install \"lora-studio[tensorboard]\"),"
                          " or set log_with = \"\".") from None


def module_update_norms(state: dict[str, torch.Tensor], scale: float) -> dict[str, float]:
    """‖scale · up @ down‖_F of every module of a peft LoRA state dict (`...lora_A.weight` /
    `...lora_B.weight`), computed as sqrt(tr((BᵀB)(AAᵀ))) without forming the update."""
    norms = {}
    for key, down in state.items():
        if ".lora_A." not in key:
            continue
        up = state.get(key.replace(".lora_A.", ".lora_B."))
        if up is None:
            continue
        a, b = down.detach().float().flatten(1), up.detach().float().flatten(1)
        squared = torch.trace((b.T @ b) @ (a @ a.T)).clamp(min=0)
        norms[key.split(".lora_A.")[0]] = float(scale * squared.sqrt())
    return norms


class TensorboardLog:
    """One run's TensorBoard writer."""

    def __init__(self, folder: Path, name: str):
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(folder) / "logs" / name
        self.writer = SummaryWriter(log_dir=str(self.folder))

    def step(self, step: int, loss: float, lrs: list[float], grad_norm: float | None) -> None:
        self.writer.add_scalar("loss/train", loss, step)
        for name, lr in zip(("unet", "text_encoder"), lrs):
            self.writer.add_scalar(f"lr/{name}", lr, step)
        if grad_norm is not None:
            self.writer.add_scalar("grad_norm", grad_norm, step)

    def validation(self, step: int, loss: float) -> None:
        self.writer.add_scalar("loss/validation", loss, step)

    def weight_norms(self, step: int, norms: dict[str, float]) -> None:
        for module, value in norms.items():
            self.writer.add_scalar(f"weight_norm/{module}", value, step)

    def close(self) -> None:
        self.writer.close()
