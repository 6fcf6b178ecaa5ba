"""Peak GPU memory of a training run, estimated from its settings before it starts.

`estimate_memory(cfg, arch)` adds up what `trainer.py` keeps on a CUDA GPU, part by part
(`memory_counts` counts what the networks hold):

* Frozen weights: every parameter of the UNet, the text encoder(s) and the VAE, counted exactly
  from their configs on the meta device, in the run's weight dtype
  (`device.DeviceChoice.weight_dtype_name`: fp16 / bf16 with mixed precision, else fp32; an SDXL
  VAE with `force_upcast` stays fp32 in fp16 runs). The trainer keeps the text encoders and the
  VAE on the GPU even when latents and captions are cached (previews need them).
* The LoRA (peft's tensors at the run's rank, fp32), its gradients (fp32) and the optimizer's
  state: AdamW 2 fp32 moments; 8-bit AdamW 2 one-byte moments + an fp32 absmax per 256 values
  (fp32 moments for tensors under 4096 values); Adafactor factored fp32 second moments;
  Prodigy exp_avg, exp_avg_sq, s and p0 (a scalar for the zero-initialised lora_B).
* Activations: the values autograd saves for the backward pass of one step at the largest
  bucket x batch: `unet_activation_values` per latent pixel (H/f x W/f, f the VAE's downscale)
  x batch, plus trained text encoders'; 4 bytes a value in fp32, 4 x `HALF_ACTIVATION_FACTOR`
  under fp16 / bf16 autocast (norms, softmax and their inputs stay fp32); twice with
  preserve_base (a second forward with the LoRA). With gradient checkpointing, `recompute` is
  the largest block rebuilt during backward.
* Encoding: the VAE encoding images without gradients: before training when latents are cached
  (`TrainData.cache_latents` encodes `data.cache_batch_size` images of a bucket at once: one at
  1024 px, four at 512 px), else every step. It
  holds about 5 tensors of the VAE's first width x H x W at its peak (meta-device count).
* Overhead: the CUDA context (outside torch's allocator) and the caching allocator's slack.

    peak = weights + LoRA + optimizer state
           + max(gradients + activations + recompute, encoding) + overhead

The parts were checked against measurements on the tiny models and against counts on the meta
device of the full-size SD 1.5 / SDXL networks (tests/core/test_train_memory.py); the GPU
benchmark `tests/benchmarks/train_memory.py` measures real peaks. No Qt; torch is imported only
to build the meta-device networks.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_studio.core.train.memory_counts import (
    TOKENS,
    at_rank,
    lora_shapes,
    optimizer_state_bytes,
    parameter_count,
    read_config,
    text_encoder_activation_values,
    unet_activation_values,
)

GIB = 1024 ** 3
MIB = 1024 ** 2
# The CUDA context, cuBLAS / cuDNN handles and kernels torch loads (outside
# torch.cuda.max_memory_allocated): about 300-600 MiB on current drivers with lazy loading.
CUDA_CONTEXT_BYTES = 512 * MIB
# Blocks the caching allocator reserves but does not hand out (memory_reserved - allocated).
ALLOCATOR_SLACK = 0.08
# Saved-activation bytes under fp16 / bf16 autocast relative to fp32 (no checkpointing,
# checkpointing): norms, softmax and their inputs stay fp32. Emulated CUDA autocast policy,
# counted on the meta device with rank-16 attention LoRAs at 512 (SD 1.x), 768 (SD 2) and
# 1024 (SDXL); the other target presets come within 25% of it (SD 1.5 "attention+mlp" with
# checkpointing: 0.74).
HALF_ACTIVATION_FACTOR = {"sd1": (0.716, 0.590), "sd2": (0.726, 0.628), "sdxl": (0.692, 0.574)}
DEFAULT_HALF_FACTOR = (0.70, 0.58)
VAE_ENCODE_TENSORS = 5  # live tensors of the VAE's first width x H x W while it encodes
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass
class MemoryEstimate:
    """Estimated peak GPU memory of a run, in bytes, by part (see the module text)."""

    arch: str
    bucket: tuple[int, int]  # (width, height) of the largest bucket
    batch_size: int
    weight_dtype: str  # "float16" | "bfloat16" | "float32"
    unet_weights: int
    text_encoder_weights: int
    vae_weights: int
    lora_params: int
    lora_grads: int
    optimizer_state: int
    activations: int  # saved for backward by one step (largest bucket x batch)
    recompute: int  # gradient checkpointing: the largest block rebuilt during backward
    encoding: int  # VAE encoding (cache pass, or every step without cached latents)
    overhead: int  # CUDA context + allocator slack
    lora_parameter_count: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def weights(self) -> int:
        return self.unet_weights + self.text_encoder_weights + self.vae_weights

    @property
    def training_state(self) -> int:
        """LoRA parameters, their gradients and the optimizer state."""
        return self.lora_params + self.lora_grads + self.optimizer_state

    @property
    def working(self) -> int:
        """The step's peak on top of what stays resident: backward, or the VAE encoding."""
        return max(self.lora_grads + self.activations + self.recompute,
                   self.encoding) - self.lora_grads

    @property
    def allocated(self) -> int:
        """What torch.cuda.max_memory_allocated would report."""
        return self.weights + self.training_state + self.working

    @property
    def total(self) -> int:
        return self.allocated + self.overhead

    def parts(self) -> dict[str, int]:
        """Every part by its printed name (bytes), in the order of the peak formula."""
        return {"UNet weights": self.unet_weights,
                "text encoder weights": self.text_encoder_weights,
                "VAE weights": self.vae_weights, "LoRA parameters": self.lora_params,
                "LoRA gradients": self.lora_grads, "optimizer state": self.optimizer_state,
                "activations": self.activations, "recompute": self.recompute,
                "encoding": self.encoding, "overhead": self.overhead}

    @property
    def encoding_is_peak(self) -> bool:
        """True when the VAE encoding, not the backward pass, sets the peak."""
        return self.encoding > self.lora_grads + self.activations + self.recompute

    def summary(self) -> str:
        """"Estimated GPU memory: 9.8 GiB (weights 5.1, LoRA+optimizer 0.4, activations 3.6,
        overhead 0.7)" ("VAE encoding" instead of "activations" when that is the peak)."""
        working = "VAE encoding" if self.encoding_is_peak else "activations"
        return (f"Estimated GPU memory: {gib(self.total)} GiB (weights {gib(self.weights)}, "
                f"LoRA+optimizer {gib(self.training_state)}, {working} "
                f"{gib(self.working)}, overhead {gib(self.overhead)})")


def format_bytes(nbytes: float) -> str:
    """"4.8 GiB", "35 MiB" or "0.25 MiB"."""
    if nbytes >= 0.1 * GIB:
        return f"{nbytes / GIB:.1f} GiB"
    if not nbytes:
        return "0 MiB"
    return f"{nbytes / MIB:.0f} MiB" if nbytes >= MIB else f"{nbytes / MIB:.2f} MiB"


def gib(nbytes: float) -> str:
    """GiB with one decimal (two below 0.1 GiB, so a small part does not read as 0)."""
    value = nbytes / GIB
    return f"{value:.2f}" if 0 < value < 0.095 else f"{value:.1f}"


# ------------------------------------------------------------------ the networks' configs
def _model_folder(cfg, arch: str, model: Any) -> Path:
    """The folder whose <component>/config.json describe the model: a diffusers folder, or
    for a single file `model.config_dir` / the shipped configs of `arch`."""
    from lora_studio.core.models.single_file import default_config_dir

    path = getattr(model, "path", model)
    if path is not None and (Path(path) / "unet" / "config.json").is_file():
        return Path(path)
    if cfg.model.config_dir:
        return Path(cfg.model.config_dir).expanduser()
    return default_config_dir(getattr(model, "arch", None) or arch)


# ------------------------------------------------------------------ the estimate
def _largest_bucket(cfg, buckets) -> tuple[tuple[int, int], int]:
    """The (w, h) of the largest bucket by area, and how many of `buckets` are it (0 when
    `buckets` is not given: the bucket table of the config's settings is used)."""
    if buckets:
        bucket = tuple(max(buckets, key=_area))
        return (int(bucket[0]), int(bucket[1])), sum(1 for b in buckets if tuple(b) == bucket)
    from lora_studio.core.dataset.buckets import bucket_resolutions

    table = bucket_resolutions(cfg.bucket_settings())
    return max(table, key=_area), 0


def _area(bucket) -> tuple[int, int]:
    """Sort key of the largest bucket: its area, then the squarer of equal areas."""
    return bucket[0] * bucket[1], -max(bucket)


def _lora_bytes(cfg, folder: str, text_encoders: list[str]) -> tuple[int, int, int]:
    """(parameter count, fp32 bytes, optimizer state bytes) of the LoRA the run trains."""
    lo = cfg.lora
    trained = {"unet": tuple(cfg.unet_targets())}
    if lo.train_text_encoder:
        trained.update({c: tuple(cfg.text_encoder_targets()) for c in text_encoders})
    count = state = 0
    for component, targets in trained.items():
        for kind, shape in lora_shapes(folder, component, targets):
            shape = at_rank(kind, shape, lo.rank)
            count += math.prod(shape)
            state += optimizer_state_bytes(cfg.train.optimizer, kind, shape)
    return count, 4 * count, state


def _activation_bytes(cfg, folder: Path, family: str, text_encoders: list[str],
                      latent: tuple[int, int]) -> tuple[int, int]:
    """(saved for backward, recomputed block) bytes of one step at `latent` x batch."""
    lo, tr = cfg.lora, cfg.train
    gc = tr.gradient_checkpointing
    tokens = TOKENS * max(1, cfg.dataset.max_token_length // 75)  # 1-3 CLIP windows
    per_pixel, per_sample, block = unet_activation_values(
        read_config(folder, "unet"), cfg.unet_targets(), lo.rank, gc, tokens)
    values = per_pixel * latent[0] * latent[1] + per_sample
    if lo.train_text_encoder:
        values += sum(tokens * text_encoder_activation_values(
            read_config(folder, c), cfg.text_encoder_targets(), gc) for c in text_encoders)
    half = tr.mixed_precision in ("fp16", "bf16")
    per_value = 4 * (HALF_ACTIVATION_FACTOR.get(family, DEFAULT_HALF_FACTOR)[gc] if half else 1)
    forwards = 2 if tr.preserve_base else 1  # preserve_base: a second forward with the LoRA
    batch = tr.batch_size
    return (int(batch * forwards * values * per_value),
            int(batch * block * latent[0] * latent[1] * per_value))


def estimate_memory(cfg, arch: str, buckets: list[tuple[int, int]] | None = None,
                    model: Any = None) -> MemoryEstimate:
    """Peak GPU memory of training `cfg` on a model of architecture `arch` ("sd1", "sd2",
    "sd2-v", "sdxl"). `buckets`: the (w, h) each image trains at (the dataset plan's; default:
    the config's bucket table); `model`: a diffusers folder or `ModelSource` whose configs to
    read (default: the shipped configs of `arch`). Reads configs only; cached per folder."""
    from lora_studio.core.models.architecture import lora_family
    from lora_studio.core.train.device import DeviceChoice

    tr, d = cfg.train, cfg.dataset
    family = lora_family(arch)
    folder = _model_folder(cfg, arch, model)
    key = str(folder)
    text_encoders = ["text_encoder", "text_encoder_2"] if family == "sdxl" else ["text_encoder"]
    weight_dtype = DeviceChoice("cuda", tr.mixed_precision).weight_dtype_name
    size = _DTYPE_BYTES[weight_dtype]
    vae = read_config(folder, "vae")
    vae_size = 4 if family == "sdxl" and weight_dtype == "float16" \
        and vae.get("force_upcast", True) else size
    bucket, in_bucket = _largest_bucket(cfg, buckets)
    scale = 2 ** (len(vae["block_out_channels"]) - 1)
    latent = (bucket[1] // scale, bucket[0] // scale)
    count, lora, state = _lora_bytes(cfg, key, text_encoders)
    activations, recompute = _activation_bytes(cfg, folder, family, text_encoders, latent)
    images = tr.batch_size
    if tr.cache_latents:
        flips = 2 if d.random_flip else 1
        from lora_studio.core.train.data import cache_batch_size

        per_call = cache_batch_size(*bucket)
        images = min(per_call, in_bucket * flips) if in_bucket else per_call
    encoding = VAE_ENCODE_TENSORS * vae["block_out_channels"][0] * bucket[0] * bucket[1] \
        * images * vae_size
    estimate = MemoryEstimate(
        arch=arch, bucket=bucket, batch_size=tr.batch_size, weight_dtype=weight_dtype,
        unet_weights=parameter_count(key, "unet") * size,
        text_encoder_weights=sum(parameter_count(key, c) for c in text_encoders) * size,
        vae_weights=parameter_count(key, "vae") * vae_size, lora_params=lora, lora_grads=lora,
        optimizer_state=state, activations=activations, recompute=recompute,
        encoding=encoding, overhead=0, lora_parameter_count=count)
    estimate.overhead = int(CUDA_CONTEXT_BYTES + ALLOCATOR_SLACK * estimate.allocated)
    estimate.notes = _notes(cfg, estimate, images)
    return estimate


def _notes(cfg, est: MemoryEstimate, images: int) -> list[str]:
    notes = []
    if cfg.train.device in ("cpu", "mps"):
        notes.append(f"train.device is \"{cfg.train.device}\": this is what the run would "
                     "need on a CUDA GPU.")
    if est.encoding_is_peak:
        w, h = est.bucket
        when = (f"caching latents encodes up to {images} image(s) at {w}x{h} at once"
                if cfg.train.cache_latents else f"the VAE encodes each {w}x{h} batch")
        notes.append(f"The peak comes from the VAE: {when} ({gib(est.encoding)} GiB).")
    return notes


# ------------------------------------------------------------------ what lowers it
def _levers(cfg) -> list[tuple[str, Any, str]]:
    """(key, lower-memory value, what it costs) of the settings that could lower the peak, in
    the usual order of how much they save."""
    tr, lo, d = cfg.train, cfg.lora, cfg.dataset
    levers = [
        ("train.gradient_checkpointing", True, not tr.gradient_checkpointing,
         "the backward pass recomputes each block's activations, about 20-30% slower"),
        ("train.cache_latents", not tr.cache_latents, True,
         "the VAE encodes each image once before training instead of every step"
         if not tr.cache_latents else "the VAE encodes each batch as it trains instead of "
         "a few images at once beforehand; slower"),
        ("train.batch_size", 1, tr.batch_size > 1,
         "raise train.gradient_accumulation to keep the images per optimizer step"),
        ("train.optimizer", "adamw8bit", tr.optimizer in ("adamw", "prodigy"),
         "needs a CUDA GPU and bitsandbytes"),
        ("dataset.resolution", max(256, round(d.resolution * 0.75 / 64) * 64),
         d.resolution > 256, "less detail is learnt"),
        ("train.mixed_precision", "bf16", tr.mixed_precision != "bf16",
         "fp16 on GPUs without bf16" if tr.mixed_precision == "no"
         else "an SDXL VAE stays fp32 in fp16 runs, not in bf16 ones"),
        ("lora.rank", max(1, lo.rank // 2), lo.rank > 4, "a smaller LoRA learns less detail"),
        ("lora.train_text_encoder", False, lo.train_text_encoder, "UNet only"),
        ("train.preserve_base", 0.0, tr.preserve_base > 0, "no differential output "
         "preservation"),
    ]
    return [(key, value, why) for key, value, applies, why in levers if applies]


def _changed(cfg, key: str, value: Any):
    section, name = key.split(".")
    changed = copy.deepcopy(cfg)
    setattr(getattr(changed, section), name, value)
    return changed


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else f"{value:g}"


def lower_memory_advice(cfg, arch: str, buckets: list[tuple[int, int]] | None = None,
                        model: Any = None) -> list[str]:
    """The settings that would lower the estimated peak, the biggest saving first, each as
    "<config key> = <value>: about <saving> less (<what it costs>)". Each saving is the
    estimate re-run with that one change; a change that would not lower the peak (say,
    caching latents when the caching pass is the peak) is left out."""
    base = estimate_memory(cfg, arch, buckets, model).total
    found = []
    for key, value, why in _levers(cfg):
        scaled = buckets
        if key == "dataset.resolution" and buckets:
            ratio = value / cfg.dataset.resolution
            scaled = [(round(w * ratio / 64) * 64 or 64, round(h * ratio / 64) * 64 or 64)
                      for w, h in buckets]
        saving = base - estimate_memory(_changed(cfg, key, value), arch, scaled, model).total
        if saving >= MIB:
            found.append((saving, f"{key} = {_toml(value)}: about {format_bytes(saving)} less "
                                  f"({why})"))
    return [text for _, text in sorted(found, key=lambda item: -item[0])]
