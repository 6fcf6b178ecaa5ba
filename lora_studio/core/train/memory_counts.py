"""What the networks of a model hold, counted from their configs (used by `memory.py`).

* `parameter_count` / `lora_shapes`: each network built from its config on the meta device (no
  weights, no memory; cached per config folder), the LoRA injected by peft as the trainer
  injects it, at rank 1 (a LoRA tensor's size is linear in the rank).
* `optimizer_state_bytes`: what each optimizer keeps per fp32 LoRA tensor.
* `unet_activation_values` / `text_encoder_activation_values`: the values autograd saves for
  the backward pass, summed block by block in forward order from the config. Per latent pixel,
  with the channel count C of the block's level (and 4^-level the pixels of that level):
  a ResNet block saves 3 x (C_in + C_out) (norm, SiLU and conv inputs, twice); a transformer
  layer 23 x C with the attention trained (q, k, v and output of both attentions, norms,
  the MLP's GEGLU halves), 5 x C more with its MLP trained, plus 2 float32 log-sum-exp values
  per head and the LoRA's rank-wide intermediates; its wrapper 3 x C (conv projections) or
  1 x C (linear ones; 3 x C with the projections trained); each down / up sampler 1 x C; the
  output head 3 x C_0. Nothing is saved before the first trained layer. Per sample: the text
  states once and the cross-attention keys and values of every layer (77 tokens). With
  gradient checkpointing (diffusers checkpoints every ResNet block but the middle block's
  first, and every transformer layer) a block keeps only its input (nothing at all before the
  first trained layer), and the backward pass rebuilds one block at a time (`block`).
  CLIP text encoders save per token and layer 7 x width + 2 x MLP width (quick_gelu; 1 x with
  gelu), one width and one MLP width more with the MLP trained, one width with checkpointing
  (and one for the embeddings).
  The coefficients were counted against autograd on the meta device (tests/memory_probe.py):
  SD 1.5, SD 2, SDXL and the tiny models agree within 5% for every target preset, rank 4 / 16,
  with and without checkpointing (tests/core/test_train_memory.py).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOKENS = 77  # one CLIP window; dataset.max_token_length 150 / 225 reads 2 / 3
BNB_MIN_8BIT_SIZE, BNB_BLOCK = 4096, 256  # bitsandbytes' 8-bit threshold and block size


def read_config(folder: Path, component: str) -> dict[str, Any]:
    """<folder>/<component>/config.json; ModelLoadError saying what to fix when unreadable."""
    from lora_studio.core.errors import ModelLoadError

    path = folder / component / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"Cannot read {path} ({exc}).",
                             "Point model.base (or model.config_dir) at a complete Stable "
                             "Diffusion model folder.") from exc


def meta_network(folder: str, component: str):
    """The network of `component` built from its config on the meta device (no weights)."""
    import torch

    config = read_config(Path(folder), component)
    with torch.device("meta"):
        if component == "unet":
            from diffusers import UNet2DConditionModel

            return UNet2DConditionModel.from_config(config)
        if component == "vae":
            from diffusers import AutoencoderKL

            return AutoencoderKL.from_config(config)
        import transformers

        name = "CLIPTextModelWithProjection" if component == "text_encoder_2" \
            else "CLIPTextModel"
        index = Path(folder) / "model_index.json"
        if index.is_file():  # {"text_encoder": ["transformers", "CLIPTextModel"], ...}
            entry = json.loads(index.read_text(encoding="utf-8")).get(component) or [0, None]
            name = entry[1] or name
        text_config = transformers.CLIPTextConfig.from_pretrained(Path(folder) / component)
        return getattr(transformers, name)(text_config)


@functools.lru_cache(maxsize=64)
def parameter_count(folder: str, component: str) -> int:
    """Floating-point parameters and buffers of a network, counted on the meta device."""
    net = meta_network(folder, component)
    return sum(t.numel() for t in (*net.parameters(), *net.buffers()) if t.is_floating_point())


@functools.lru_cache(maxsize=128)
def lora_shapes(folder: str, component: str,
                targets: tuple[str, ...]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """("A" | "B", shape at rank 1) of every LoRA tensor the trainer's peft adapter adds."""
    from peft import LoraConfig

    from lora_studio.core.errors import ConfigError

    net = meta_network(folder, component)
    try:
        net.add_adapter(LoraConfig(r=1, lora_alpha=1, target_modules=list(targets)))
    except ValueError as exc:
        raise ConfigError("lora.targets", f"matches no layer of this {component} ({exc})",
                          "Use \"attention\", \"attention+mlp\" or UNet module names such as "
                          "\"to_q\".") from exc
    return tuple(("A" if ".lora_A." in name else "B", tuple(p.shape))
                 for name, p in net.named_parameters() if ".lora_" in name)


def at_rank(kind: str, shape: tuple[int, ...], rank: int) -> tuple[int, ...]:
    """A rank-1 LoRA tensor's shape at `rank` (lora_A: rank rows; lora_B: rank columns)."""
    dims = list(shape)
    dims[0 if kind == "A" else 1] = rank
    return tuple(dims)


def optimizer_state_bytes(optimizer: str, kind: str, shape: tuple[int, ...]) -> int:
    """Bytes of `optimizer`'s state for one fp32 LoRA tensor (see the module text)."""
    n = math.prod(shape)
    if optimizer == "adamw8bit":
        if n < BNB_MIN_8BIT_SIZE:
            return 8 * n
        return 2 * n + 2 * 4 * math.ceil(n / BNB_BLOCK)
    if optimizer == "adafactor":  # + the tensor's RMS, a 0-dim fp32 tensor
        if len(shape) < 2:
            return 4 * n + 4
        return 4 * (math.prod(shape[:-1]) + math.prod(shape[:-2]) * shape[-1]) + 4
    if optimizer == "prodigy":
        return 4 * (3 * n + (1 if kind == "B" else n))
    return 8 * n  # adamw


# ------------------------------------------------------------------ activations
@dataclass
class _Targets:
    """Which kinds of layer a LoRA target list trains."""

    attention: bool
    ff: bool
    proj: bool
    conv: bool
    pixel_linears: int  # trained linears that run on every latent pixel, per layer

    @classmethod
    def of(cls, targets: list[str]) -> _Targets:
        names = set(targets)
        attention = bool(names & {"to_q", "to_k", "to_v", "to_out.0"})
        pixel = len(names & {"to_q", "to_k", "to_v", "to_out.0"}) \
            + len(names & {"to_q", "to_out.0"}) + len(names & {"ff.net.0.proj", "ff.net.2"})
        return cls(attention, bool(names & {"ff.net.0.proj", "ff.net.2"}),
                   bool(names & {"proj_in", "proj_out"}), bool(names & {"conv1", "conv2"}),
                   pixel)


@dataclass
class _Walk:
    """Values saved for backward, summed over the UNet's blocks in forward order (per latent
    pixel of the full-size level, and per sample for the text tokens)."""

    targets: _Targets
    checkpointing: bool
    rank: int
    conv_projection: bool
    tokens: int = TOKENS  # the caption's tokens (77 per CLIP window)
    grad: bool = False  # a trained layer has run: from here on, blocks save for backward
    per_pixel: float = 0.0
    per_sample: float = 0.0
    block: float = 0.0  # checkpointing: the largest block rebuilt in backward, per pixel

    def add(self, level: int, values: float) -> None:
        self.per_pixel += values / 4 ** level

    def resnet(self, level: int, cin: int, cout: int, checkpointed: bool = True) -> None:
        inside = 3 * (cin + cout)  # norm, SiLU and conv inputs, twice
        self.grad = self.grad or self.targets.conv
        if self.checkpointing and checkpointed:  # the checkpoint keeps the block's input
            if self.grad:  # (a block nothing trained runs before is not kept at all)
                self.add(level, cin)
                self.block = max(self.block, inside / 4 ** level)
        elif self.grad:
            self.add(level, inside)

    def transformer(self, level: int, width: int, layers: int, heads: int) -> None:
        t, first = self.targets, not self.grad
        if not (t.attention or t.ff or t.proj or self.grad):
            return
        self.grad = True
        layer = (23 if t.attention else 0) + (5 if t.ff else 0)  # per channel, per layer
        lora = 2 * self.rank * t.proj  # the projections' LoRA (rank-wide) intermediates
        if self.checkpointing:  # each layer's input; the wrapper's norm and projections
            wrapper = layers + (1 if first else 3 if self.conv_projection else 1 + 2 * t.proj)
            self.add(level, wrapper * width + lora)
            self.block = max(self.block, layer * width / 4 ** level)
            return
        # The first trained block saves less: nothing before its first LoRA needs gradients.
        wrapper = t.proj if first else 3 if self.conv_projection else 1 + 2 * t.proj
        per_layer = layer * width + 2 * heads + self.rank * t.pixel_linears
        self.add(level, wrapper * width + layers * per_layer + lora)
        self.per_sample += layers * self.tokens * 2 * (width + self.rank)  # cross-attn k, v


def _per_level(value: Any, n: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def unet_activation_values(config: dict[str, Any], targets: list[str], rank: int,
                           checkpointing: bool,
                           tokens: int = TOKENS) -> tuple[float, float, float]:
    """(values per latent pixel, per sample, recomputed block per pixel) a UNet saves for
    backward with a LoRA on `targets`, in forward order from its config."""
    chans = list(config["block_out_channels"])
    n = len(chans)
    layers = _per_level(config.get("layers_per_block", 2), n)
    depth = _per_level(config.get("transformer_layers_per_block", 1), n)
    heads = _per_level(config.get("num_attention_heads") or config.get("attention_head_dim", 8),
                       n)
    walk = _Walk(_Targets.of(targets), checkpointing, rank,
                 not config.get("use_linear_projection", False), tokens)
    skips, prev = [chans[0]], chans[0]
    for i, kind in enumerate(config["down_block_types"]):
        for _ in range(layers[i]):
            walk.resnet(i, prev, chans[i])
            prev = chans[i]
            skips.append(prev)
            if "CrossAttn" in kind:
                walk.transformer(i, prev, depth[i], heads[i])
        if i < n - 1:
            if walk.grad:
                walk.add(i, prev)  # the downsampling conv's input
            skips.append(prev)
    walk.resnet(n - 1, prev, prev, checkpointed=False)  # diffusers never checkpoints this one
    walk.transformer(n - 1, prev, depth[-1], heads[-1])
    walk.resnet(n - 1, prev, prev)
    for i, kind in enumerate(config["up_block_types"]):
        level = n - 1 - i
        for _ in range(layers[level] + 1):
            walk.resnet(level, prev + skips.pop(), chans[level])
            prev = chans[level]
            if "CrossAttn" in kind:
                walk.transformer(level, prev, depth[level], heads[level])
        if level > 0:
            walk.add(level - 1, prev)  # the upsampling conv's input
    walk.add(0, 3 * chans[0])  # the output norm, SiLU and conv
    if walk.grad:
        walk.per_sample += tokens * config["cross_attention_dim"]  # the text states, once
    return walk.per_pixel, walk.per_sample, walk.block


def text_encoder_activation_values(config: dict[str, Any], targets: list[str],
                                   checkpointing: bool) -> float:
    """Values a CLIP text encoder with a LoRA on `targets` saves for backward, per token."""
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    if checkpointing:  # each layer's input, and the embeddings
        return (config["num_hidden_layers"] + 1) * hidden
    mlp = bool({"fc1", "fc2"} & set(targets))
    act = 2 if config.get("hidden_act") == "quick_gelu" else 1  # x * sigmoid(1.702 x)
    return config["num_hidden_layers"] * ((7 + mlp) * hidden + (act + mlp) * inner)
