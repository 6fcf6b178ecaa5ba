"""The inputs of a merge or fuse as updates per module: the one place a LoRA file of any kind, at
a weight and block weights, becomes what it adds to each layer (issue 23).

Module m of input i adds to its layer what the session renders it with:

    s_i(m) * dW_i(m)  to the weight,   s_i(m) * diff_b_i(m)  to the bias (full-difference),
    s_i(m) = w_i * block factor of m   (1 without block weights)

- the block factor is the session's (`generate.lycoris_layers`, `generate.adapters`):
  `BlockWeights.module_factor` of the module on the UNet's `UNetLayout` for a UNet module, the
  BASE number for a text-encoder module (`block_factor`);
- dW is `(alpha / r) * up @ down` for a plain LoRA / LoCon module (kept as its two factors, so a
  merge of plain LoRAs stays exact), else `lycoris.delta_weight`: LoHa, LoKr and
  full-difference updates do not depend on the model; DoRA's is `W_dora - W0` (the session
  renders strength s as `W0 + s * (W_dora - W0)`), which needs the layer's base weight W0, so an
  input holding DoRA needs the base model.

`ModelBase` is that model: a loaded pipeline, a model spec (the UNet layout read from its config,
the weights loaded on first need), or only an architecture (its shipped config: the UNet layout
and layer shapes, no weights; a UNet built on the meta device costs no memory).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lora_studio.core.errors import LoraFormatError
from lora_studio.core.lora.block_weights import BlockWeights, UNetLayout, normalized
from lora_studio.core.lora.lycoris import LycorisFile, NetworkModule, delta_bias, delta_weight
from lora_studio.core.lora.model import ARCH_LABELS, LoraFile, LoraModule, split_canonical

# the UNet layers that are 3x3 convs in every Stable Diffusion UNet: a LyCORIS file may hold
# their update flattened to [out, in*9], and without a model this says the kernel
_KERNEL_3X3 = ("conv1", "conv2", "conv", "conv_in", "conv_out")


@dataclass
class MixInput:
    """One file of a merge or fuse, at its weight and block weights (None: every block at w)."""

    name: str
    network: LoraFile | LycorisFile
    weight: float
    block_weights: BlockWeights | None = None

    @property
    def label(self) -> str:
        """`name:weight`, plus `:lbw=...` with block weights (metadata and reports)."""
        text = f"{self.name}:{self.weight:g}"
        if self.block_weights is not None:
            text += f":lbw={self.block_weights.notation()}"
        return text

    @property
    def dora(self) -> bool:
        return isinstance(self.network, LycorisFile) and any(
            m.dora_scale is not None for m in self.network.modules.values())

    def not_low_rank(self) -> str | None:
        """The kind ("LoHa", "DoRA", ...) of a module of this file whose update is not a product
        of two factors (it cannot be merged by concatenating ranks), or None."""
        if isinstance(self.network, LycorisFile):
            for module in self.network.modules.values():
                if not _is_factors(module):
                    return module.label
        return None


def read_inputs(items, *, action: str) -> list[MixInput]:
    """`(LoRA file or path, weight[, block weights])` items → MixInputs. Every file is read (a
    damaged or unsupported one refused) before anything else happens."""
    if not items:
        raise LoraFormatError(f"Nothing to {action}: give at least one LoRA.")
    inputs = []
    for index, (source, weight, *rest) in enumerate(items):
        weight = float(weight)
        if not math.isfinite(weight):
            raise LoraFormatError(f"Weight {weight} for input {index + 1} is not a number.")
        network, name = _load(source, index, action)
        inputs.append(MixInput(name, network, weight, normalized(rest[0]) if rest else None))
    return inputs


def _load(source, index: int, action: str) -> tuple[LoraFile | LycorisFile, str]:
    if isinstance(source, (LoraFile, LycorisFile)):
        name = (source.metadata.get("ss_output_name") or source.metadata.get("modelspec.title")
                or f"lora{index + 1}")
        return source, name
    from lora_studio.core.lora.lycoris_read import read_network

    path = Path(source)
    if not path.is_file():
        raise LoraFormatError(f"{path} does not exist or is not a file.",
                              f"Check the path of each LoRA to {action}.")
    return read_network(path), path.name


def block_factor(block_weights: BlockWeights | None, name: str,
                 layout: UNetLayout | None) -> float:
    """The factor the session puts on a module's strength for its block (canonical `name`)."""
    if block_weights is None:
        return 1.0
    return block_weights.part_factor(*split_canonical(name), layout)


def arch_label(arch: str | None) -> str:
    return ARCH_LABELS.get(arch or "", "an unknown model")


# ----------------------------------------------------------------------------- the model
class ModelBase:
    """The base model of a merge or fuse (see the module docstring). Make one with `of_model`,
    `of_pipeline` or `of_arch`."""

    def __init__(self) -> None:
        self._spec: Any = None
        self._has_spec = False
        self._pipe: Any = None
        self._arch: str | None = None
        self._meta_unet: Any = None
        self._modules_of = None

    @classmethod
    def of_model(cls, spec: Any) -> ModelBase:
        """A model spec as `load_pipeline` takes it (None: the built-in tiny model)."""
        base = cls()
        base._spec, base._has_spec = spec, True
        return base

    @classmethod
    def of_pipeline(cls, pipe: Any) -> ModelBase:
        base = cls()
        base._pipe = pipe
        return base

    @classmethod
    def of_arch(cls, arch: str) -> ModelBase:
        """Only the family's standard UNet (layout and shapes), no weights."""
        base = cls()
        base._arch = arch
        return base

    @property
    def has_weights(self) -> bool:
        return self._pipe is not None or self._has_spec

    @property
    def arch(self) -> str | None:
        """The model's LoRA family ("sd1", "sd2", "sdxl")."""
        if self._pipe is not None:
            from lora_studio.core.lora.apply import pipeline_arch

            return pipeline_arch(self._pipe)
        if self._has_spec:
            from lora_studio.core.models.architecture import lora_family
            from lora_studio.core.models.loading import resolve_model

            return lora_family(resolve_model(self._spec).arch)
        return self._arch

    def pipeline(self) -> Any:
        """The loaded pipeline (loaded now on first need)."""
        if self._pipe is None:
            if not self._has_spec:
                raise LoraFormatError("No base model was given.")
            from lora_studio.core.models.loading import load_pipeline

            self._pipe = load_pipeline(self._spec)
            self._meta_unet = None
        return self._pipe

    def layout(self) -> UNetLayout:
        """Which UNet blocks hold attention: what block weights are mapped on."""
        return UNetLayout.of(self._unet())

    def layer(self, name: str) -> torch.nn.Module | None:
        """The layer a canonical module name patches (loads the model); None when it has none."""
        from lora_studio.core.lora.apply import _find_module, _module_index

        if self._modules_of is None:
            self._modules_of = _module_index(self.pipeline())
        return _find_module(self._modules_of, name)[0]

    def weight_shape(self, name: str) -> tuple[int, ...] | None:
        """The shape of that layer's weight, from the loaded model or else the UNet config (no
        weights read); None where unknown."""
        if self._pipe is not None:
            layer = self.layer(name)
            return None if layer is None else tuple(layer.weight.shape)
        component, path = split_canonical(name)
        if component != "unet":
            return None  # text-encoder layers are Linear: their updates are 2-D anyway
        try:
            return tuple(self._unet().get_submodule(path).weight.shape)
        except AttributeError:
            return None

    def _unet(self) -> Any:
        if self._pipe is not None:
            return self._pipe.unet
        if self._meta_unet is None:
            from diffusers import UNet2DConditionModel

            config = json.loads(self._unet_config().read_text(encoding="utf-8"))
            with torch.device("meta"):  # the modules and shapes, no memory
                self._meta_unet = UNet2DConditionModel.from_config(config)
        return self._meta_unet

    def _unet_config(self) -> Path:
        from lora_studio.core.models.single_file import default_config_dir

        arch = self._arch
        if self._has_spec:
            from lora_studio.core.models.loading import resolve_model

            source = resolve_model(self._spec)
            if source.path.is_dir():
                return source.path / "unet" / "config.json"
            arch = source.arch
        return default_config_dir(arch) / "unet" / "config.json"


# ----------------------------------------------------------------------------- the updates
@dataclass
class Term:
    """What one input adds to one module at its scale, as a 2-D matrix [out, n]: `up @ down`
    (a plain LoRA's factors, the scale folded into `up`) or `dense`. `in_shape` is the layer's
    (in, kh, kw) where the term says it (a Linear or 1x1 conv: (in, 1, 1)), `four_d` whether
    the input stores it as a conv; `bias` what it adds to the layer's bias."""

    index: int  # the input it comes from
    up: torch.Tensor | None = None
    down: torch.Tensor | None = None
    dense: torch.Tensor | None = None
    in_shape: tuple[int, ...] | None = None
    four_d: bool = False
    bias: torch.Tensor | None = None

    @property
    def out(self) -> int:
        return int((self.dense if self.dense is not None else self.up).shape[0])

    @property
    def n(self) -> int:
        return int((self.dense if self.dense is not None else self.down).shape[1])

    def matrix(self) -> torch.Tensor:
        """The update, float64 [out, n]."""
        if self.dense is not None:
            return self.dense.double()
        return self.up.double() @ self.down.double()

    def energy(self, basis: torch.Tensor | None = None) -> float:
        """||T||_F^2, or with an orthonormal `basis` [out, k] ||basis^T T||_F^2 (the part of
        T that lies in its span)."""
        if self.dense is not None:
            d = self.dense.double()
            d = d if basis is None else basis.T @ d
            return float((d * d).sum())
        a = self.up.double() if basis is None else basis.T @ self.up.double()
        b = self.down.double()
        return float(((a.T @ a) * (b @ b.T)).sum())


def module_term(inp: MixInput, index: int, name: str, scale: float,
                base: ModelBase | None) -> Term:
    """Input `inp`'s update of module `name` at `scale` (its weight times the block factor)."""
    module = inp.network.modules[name]
    if isinstance(module, LoraModule):
        return _factor_term(index, module.down, module.up, module.scale * scale)
    if _is_factors(module):
        return _factor_term(index, module.tensors["lora_down.weight"],
                            module.tensors["lora_up.weight"], module.scale * scale)
    w0 = None
    if module.dora_scale is not None:
        w0 = base.layer(name) if base is not None and base.has_weights else None
        if w0 is None:
            raise LoraFormatError(f"{inp.name}: the DoRA module {name} has no layer in the base "
                                  "model.", "Give the base model the file was made for.")
        w0 = w0.weight.detach()
    delta = delta_weight(module, w0) * scale
    four_d = delta.dim() == 4
    bias = delta_bias(module)
    return Term(index, dense=delta.flatten(1),
                in_shape=(int(delta.shape[1]), *delta.shape[2:]) if four_d else None,
                four_d=four_d, bias=None if bias is None else bias * scale)


def _is_factors(module: NetworkModule) -> bool:
    return module.kind == "lora" and module.dora_scale is None


def _factor_term(index: int, down: torch.Tensor, up: torch.Tensor, scale: float) -> Term:
    four_d = down.dim() == 4
    in_shape = (int(down.shape[1]), *down.shape[2:]) if four_d else (int(down.shape[1]), 1, 1)
    return Term(index, up=up.float().flatten(1) * scale, down=down.float().flatten(1),
                in_shape=tuple(int(s) for s in in_shape), four_d=four_d)


def layer_in_shape(name: str, terms: list[Term], base: ModelBase | None
                   ) -> tuple[int, ...] | None:
    """The layer's (in, kh, kw) as the terms say it, else as the model (or its architecture's
    config) says it, else the SD UNet rule for 3x3 convs; None when the terms disagree."""
    said = {t.in_shape for t in terms if t.in_shape is not None}
    if len(said) > 1:
        return None
    if said:
        return said.pop()
    n = terms[0].n
    shape = base.weight_shape(name) if base is not None else None
    if shape is not None and len(shape) == 4 and math.prod(shape[1:]) == n:
        return tuple(int(s) for s in shape[1:])
    component, path = split_canonical(name)
    if component == "unet" and path.rsplit(".", 1)[-1] in _KERNEL_3X3 and n % 9 == 0:
        return (n // 9, 3, 3)
    return (n, 1, 1)


def stored_as_conv(name: str, terms: list[Term], in_shape: tuple[int, ...],
                   base: ModelBase | None) -> bool:
    """Whether the merged module is written 4-D: a kernel, an input that stores it as a conv, or
    (for LyCORIS updates, which do not say) a conv layer (1x1) in the model or its
    architecture's UNet. Plain LoRA factors keep the form they came in."""
    if in_shape[1:] != (1, 1) or any(t.four_d for t in terms):
        return True
    if all(t.dense is None for t in terms):
        return False
    shape = base.weight_shape(name) if base is not None else None
    return shape is not None and len(shape) == 4


def describe_shapes(name: str, inputs: list[MixInput]) -> str:
    """Each input's update shape for `name` (an error message)."""
    parts = []
    for inp in inputs:
        module = inp.network.modules.get(name)
        if isinstance(module, LoraModule):
            parts.append(f"{inp.name}: down {tuple(module.down.shape)} up "
                         f"{tuple(module.up.shape)}")
        elif module is not None:
            parts.append(f"{inp.name}: {module.label} update {tuple(module.shape)}")
    return "; ".join(parts)


def as_model_base(model: Any) -> ModelBase | None:
    """A ModelBase for what a caller gave: a ModelBase, a loaded pipeline, a model spec, None."""
    if model is None or isinstance(model, ModelBase):
        return model
    if hasattr(model, "unet"):
        return ModelBase.of_pipeline(model)
    return ModelBase.of_model(model)
