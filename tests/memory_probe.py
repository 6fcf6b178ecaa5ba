"""Measuring what a training step keeps in memory, without a GPU (tests and benchmarks only).

The product estimates memory with a formula (`lora_studio.core.train.memory`); this module
measures the same quantities honestly so the formula can be checked:

* `saved_bytes(fn, *modules)`: the bytes of every distinct storage autograd saves for the
  backward pass while `fn()` runs (torch.autograd.graph.saved_tensors_hooks) and still holds
  when it returns, leaving out the modules' own parameters and buffers (frozen weights are
  saved by reference, not copied).
  With non-reentrant gradient checkpointing (diffusers' default) the inputs a checkpointed block
  keeps for its recomputation are saved through the same hooks, so they are counted too.
* `training_state_bytes(params, optimizer)`: trainable parameters, their gradients and the
  optimizer's per-parameter state tensors after a real step (the scalar "step" counters, kept
  on the CPU by torch on a GPU too, are left out).
* `meta_flash_attention()`: on the meta device torch's attention falls back to the math kernel,
  which keeps the full attention matrix; the CPU and CUDA kernels a real run uses (flash /
  memory-efficient) keep q, k, v, the output and one float32 log-sum-exp per query. Inside this
  context, meta attention saves exactly those, so a full-size SD 1.5 / SDXL UNet can be counted
  in a second without memory (checked against a real CPU forward of the tiny models).
* `CudaAutocastEmulation`: CUDA autocast's dtype policy (matmuls / convolutions / attention in
  half, norms / softmax / exp in float32, casts of trainable leaves cached) as a
  TorchFunctionMode, for counting what a fp16 / bf16 run saves on the meta device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata  # one key per storage, on any device (meta too)


def saved_bytes(fn: Callable[[], Any], *modules: torch.nn.Module) -> tuple[Any, int]:
    """(fn(), bytes of the distinct storages saved for backward while it ran and still held
    when it returned), leaving out the modules' parameters and buffers."""
    import weakref

    exclude = {_storage_key(t) for m in modules for t in (*m.parameters(), *m.buffers())}
    seen: dict[int, tuple[int, list]] = {}  # storage key -> (bytes, tensors saved on it)

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key in exclude:
            return t
        entry = seen.get(key)
        if entry is None or not any(ref() is not None for ref in entry[1]):
            # new, or a freed storage whose address a new one reuses (autograd dropped the
            # part of the graph that held it)
            entry = seen[key] = (t.untyped_storage().nbytes(), [])
        entry[1].append(weakref.ref(t))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    held = sum(nbytes for nbytes, refs in seen.values() if any(r() is not None for r in refs))
    return out, held


def training_state_bytes(params: Iterable[torch.Tensor], optimizer) -> dict[str, int]:
    """Bytes of the trainable parameters, their gradients and the optimizer's state tensors."""
    params = list(params)
    state = 0
    for p in params:
        for name, value in optimizer.state.get(p, {}).items():
            if isinstance(value, torch.Tensor) and name != "step":
                state += value.untyped_storage().nbytes()
    return {"params": sum(p.numel() * p.element_size() for p in params),
            "grads": sum(p.grad.numel() * p.grad.element_size() for p in params
                         if p.grad is not None),
            "optimizer": state}


class _MetaFlash(torch.autograd.Function):
    """Attention on meta tensors that saves what the flash / efficient kernels save."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = torch.empty_like(q)
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)


@contextlib.contextmanager
def meta_flash_attention():
    original = F.scaled_dot_product_attention

    def attention(q, k, v, *args, **kwargs):
        if q.device.type == "meta":
            return _MetaFlash.apply(q, k, v)
        return original(q, k, v, *args, **kwargs)

    F.scaled_dot_product_attention = attention
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


_HALF_OPS = {F.linear, F.conv2d, F.conv1d, torch.conv2d, torch.matmul, torch.bmm, torch.baddbmm,
             torch.addmm, torch.mm, torch.einsum, torch.Tensor.__matmul__, torch.Tensor.matmul,
             F.scaled_dot_product_attention}
_FLOAT32_OPS = {F.group_norm, F.layer_norm, torch.group_norm, torch.layer_norm, torch.exp,
                torch.Tensor.exp, torch.log, torch.pow, torch.Tensor.pow, torch.rsqrt,
                F.mse_loss, F.softplus, torch.cumsum, torch.softmax, F.softmax,
                torch.Tensor.softmax, F.log_softmax}


class CudaAutocastEmulation(TorchFunctionMode):
    """torch.autocast("cuda", dtype)'s casting policy, for tensors on any device."""

    def __init__(self, dtype: torch.dtype = torch.float16) -> None:
        super().__init__()
        self.dtype = dtype
        self.leaf_casts: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _to(self, x: Any, dtype: torch.dtype) -> Any:
        if isinstance(x, (list, tuple)):
            return type(x)(self._to(v, dtype) for v in x)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dtype == dtype:
            return x
        if dtype != torch.float32 and x.is_leaf and x.requires_grad:  # autocast's cast cache
            if id(x) not in self.leaf_casts:
                self.leaf_casts[id(x)] = (x, x.to(dtype))
            return self.leaf_casts[id(x)][1]
        return x.to(dtype)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        dtype = self.dtype if func in _HALF_OPS else torch.float32 \
            if func in _FLOAT32_OPS else None
        if dtype is not None:
            args = self._to(tuple(args), dtype)
            kwargs = {k: self._to(v, dtype) for k, v in kwargs.items()}
        return func(*args, **kwargs)


def unet_with_lora(config: dict, *, device: str = "cpu", targets=ATTENTION, rank: int = 4,
                   checkpointing: bool = False, weight_dtype: torch.dtype = torch.float32):
    """A UNet built from `config` (random weights; none at all on "meta") with a trainable
    fp32 LoRA as the trainer adds it (frozen base in `weight_dtype`)."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    with torch.device(device):
        unet = UNet2DConditionModel.from_config(config)
        unet.requires_grad_(False)
        for p in unet.parameters():
            p.data = p.data.to(weight_dtype)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                    target_modules=list(targets)))
    for p in unet.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    if checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    return unet


def unet_inputs(unet, batch: int, height: int, width: int, tokens: int = 77) -> tuple:
    """(latents, timesteps, text states, extra kwargs) for one UNet call at a latent size."""
    c, device = unet.config, unet.device
    args = (torch.randn(batch, c.in_channels, height, width, device=device),
            torch.randint(0, 1000, (batch,), device=device),
            torch.randn(batch, tokens, c.cross_attention_dim, device=device))
    extra = {}
    if c.addition_embed_type == "text_time":
        pooled = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
        extra["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, pooled, device=device),
                                      "time_ids": torch.randn(batch, 6, device=device)}
    return args, extra


def unet_activation_bytes(unet, batch: int, height: int, width: int,
                          autocast: torch.dtype | None = None) -> int:
    """Bytes saved for backward by one UNet forward at a latent size (height x width)."""
    args, extra = unet_inputs(unet, batch, height, width)
    mode = CudaAutocastEmulation(autocast) if autocast else contextlib.nullcontext()
    with meta_flash_attention(), mode:
        _, nbytes = saved_bytes(lambda: unet(*args, **extra).sample, unet)
    return nbytes


def text_encoder_with_lora(folder, cls_name: str, *, device: str = "meta", targets=(),
                           rank: int = 4, checkpointing: bool = False):
    import transformers
    from peft import LoraConfig

    config = transformers.CLIPTextConfig.from_pretrained(folder)
    with torch.device(device):
        model = getattr(transformers, cls_name)(config)
        model.requires_grad_(False)
        model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets)))
    if checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    return model


def text_encoder_activation_bytes(model, batch: int, tokens: int = 77) -> int:
    ids = torch.randint(0, 1000, (batch, tokens), device=model.device)
    with meta_flash_attention():
        _, nbytes = saved_bytes(lambda: model(ids, output_hidden_states=True), model)
    return nbytes


class PeakBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """The most bytes of tensor storages made by torch ops inside the mode that were alive at
    once: the CPU / meta stand-in for torch.cuda.max_memory_allocated. A storage counts as
    alive while any tensor made on it is (torch keeps a tensor's Python object alive while
    autograd still holds the tensor)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list] = {}  # storage key -> [bytes, tensors alive on it]
        self.now = self.peak = 0

    def _track(self, t: torch.Tensor) -> None:
        import weakref

        key = t.untyped_storage()._cdata
        entry = self.live.get(key)
        if entry is None:
            entry = self.live[key] = [t.untyped_storage().nbytes(), 0]
            self.now += entry[0]
            self.peak = max(self.peak, self.now)
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.now -= entry[0]
            del self.live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out


def load_networks(folder, *, random_weights: bool = False, device: str = "cpu",
                  dtype: torch.dtype = torch.float32,
                  vae_dtype: torch.dtype | None = None) -> dict[str, torch.nn.Module]:
    """The frozen UNet, text encoder(s) and VAE of a model folder, on `device` in `dtype`:
    its weights, or (`random_weights`, for a folder of configs only) random ones."""
    from pathlib import Path

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(folder)
    kinds = {"unet": UNet2DConditionModel, "text_encoder": CLIPTextModel,
             "text_encoder_2": CLIPTextModelWithProjection, "vae": AutoencoderKL}
    nets = {}
    for name, cls in kinds.items():
        if not (folder / name).is_dir():
            continue
        want = (vae_dtype or dtype) if name == "vae" else dtype
        if random_weights:
            from lora_studio.core.train.memory_counts import meta_network

            net = meta_network(str(folder), name)
            for p in net.parameters():
                p.data = p.data.to(want)
            net = net.to_empty(device=device)
            with torch.no_grad():
                for p in net.parameters():
                    p.normal_(0, 0.02)
                for buffer_name, buffer in net.named_buffers():  # CLIP's position ids
                    if buffer_name.endswith("position_ids"):
                        buffer.copy_(torch.arange(buffer.shape[-1]).expand_as(buffer))
        else:
            net = cls.from_pretrained(folder, subfolder=name, torch_dtype=want).to(device)
        nets[name] = net.requires_grad_(False)
    return nets


def _nbytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def measure_step(nets: dict[str, torch.nn.Module], cfg, bucket: tuple[int, int], batch: int,
                 *, cache_images: int = 0, steps: int = 2) -> dict[str, int]:
    """One training step as trainer.py takes it (the trainer's LoRA, fp32 trainable weights,
    its optimizer, autocast with mixed precision) on `nets` at `bucket` (w, h): the
    frozen weights, the bytes saved for backward by the UNet forward, the LoRA, gradients and
    optimizer state after the first step; on CUDA also torch.cuda.max_memory_allocated over
    `steps` steps ("peak_step": the second has the optimizer state allocated) and while
    VAE-encoding `cache_images` images ("peak_encode")."""
    from diffusers.training_utils import cast_training_params

    from lora_studio.core.train.optimizers import make_optimizer
    from lora_studio.core.train.trainer import _add_lora

    unet, vae = nets["unet"], nets["vae"]
    device = unet.device
    cuda = device.type == "cuda"
    found = {"unet": _nbytes(unet), "vae": _nbytes(vae),
             "text_encoders": sum(_nbytes(n) for k, n in nets.items() if "text" in k)}
    _add_lora(unet, "unet", cfg)
    cast_training_params([unet], dtype=torch.float32)
    if cfg.train.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    if cuda and cache_images:
        found["peak_encode"] = _encode_peak(vae, cache_images, bucket)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg.train.optimizer, [{"params": params, "lr": 1e-4}], 1e-4,
                               0.01, device.type)
    args, extra = unet_inputs(unet, batch, bucket[1] // scale, bucket[0] // scale)
    half = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.train.mixed_precision)
    autocast = torch.autocast(device.type, dtype=half) if half else contextlib.nullcontext()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for step in range(steps):
        with autocast:
            out, found["activations"] = saved_bytes(lambda: unet(*args, **extra).sample, unet)
            loss = out.float().square().mean()
        loss.backward()
        del out, loss
        optimizer.step()
        if step == 0:
            found.update(training_state_bytes(params, optimizer))
        optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
        found["peak_step"] = torch.cuda.max_memory_allocated()
        found["reserved"] = torch.cuda.max_memory_reserved()
    return found


def _encode_peak(vae, images: int, bucket: tuple[int, int]) -> int:
    """torch.cuda.max_memory_allocated while the VAE encodes `images` images (no gradients),
    as TrainData.cache_latents does."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        pixels = torch.zeros(images, 3, bucket[1], bucket[0], device=vae.device,
                             dtype=vae.dtype)
        vae.encode(pixels).latent_dist.mean.float()
        del pixels
    return torch.cuda.max_memory_allocated()
