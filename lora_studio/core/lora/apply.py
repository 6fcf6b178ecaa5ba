"""Load a LoRA into a diffusers pipeline, and say how much of it took.

A1111 logs unmatched keys at debug level only, so a LoRA can load as a silent no-op
(REFERENCE §2). Here every canonical module is looked up in the pipeline first: a LoRA made for
another architecture, or one that fits nothing, is refused before the pipeline is touched.

Plain LoRA / LoCon files load as PEFT adapters; LyCORIS files (LoHa, LoKr, DoRA,
full-difference: `lora.lycoris`) as patched layers (`generate.lycoris_layers`), under the same
adapter names and with the same checks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lora_studio.core.errors import LoraFormatError
from lora_studio.core.lora.layouts import model_path, peft_state_dict
from lora_studio.core.lora.lycoris import LycorisFile, NetworkModule, shape_problem
from lora_studio.core.lora.lycoris_read import read_network
from lora_studio.core.lora.model import ARCH_LABELS, LoraFile, LoraModule


@dataclass
class LoadReport:
    adapter_name: str
    matched: int
    unmatched: list[str] = field(default_factory=list)
    total: int = 0

    @property
    def fully_matched(self) -> bool:
        return self.matched == self.total


def pipeline_arch(pipe) -> str:
    """"sdxl" | "sd2" | "sd1" for a Stable Diffusion pipeline."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        return "sdxl"
    width = getattr(pipe.unet.config, "cross_attention_dim", None)
    if width == 1024:
        return "sd2"
    if width == 768:
        return "sd1"
    text_encoder = getattr(pipe, "text_encoder", None)
    act = getattr(getattr(text_encoder, "config", None), "hidden_act", "quick_gelu")
    return "sd2" if act == "gelu" else "sd1"  # OpenCLIP (SD 2) uses gelu, CLIP-L quick_gelu


def _module_index(pipe) -> Callable[[str], dict[str, torch.nn.Module] | None]:
    """component -> its modules by name, walked once per load (a LoRA has hundreds of modules;
    walking an SDXL UNet for each took seconds of the GIL)."""
    walked: dict[str, dict[str, torch.nn.Module] | None] = {}

    def modules_of(component: str) -> dict[str, torch.nn.Module] | None:
        if component not in walked:
            model = getattr(pipe, component, None)
            walked[component] = None if model is None else dict(model.named_modules())
        return walked[component]

    return modules_of


def _find_module(modules_of, name: str) -> tuple[torch.nn.Module | None, str]:
    component, path = model_path(name)
    modules = modules_of(component)
    if modules is None:
        return None, path
    for candidate in (path, "text_model." + path, path.removeprefix("text_model.")):
        if candidate in modules:
            module = modules[candidate]
            # A layer that already holds a LoRA (or held one: delete_adapters keeps the wrapper)
            # is a peft wrapper; the shapes to check are those of the layer inside it.
            if hasattr(module, "get_base_layer"):
                module = module.get_base_layer()
            return module, candidate
    return None, path


def _shape_problem(module: torch.nn.Module, lora: LoraModule | NetworkModule) -> str | None:
    """None when the LoRA factors fit the layer, else what does not fit."""
    if isinstance(lora, NetworkModule):
        if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            return f"is a {type(module).__name__}, not a Linear or Conv2d layer"
        return shape_problem(lora, module.weight.shape)
    if isinstance(module, torch.nn.Linear):
        fan_in, fan_out, kernel = module.in_features, module.out_features, (1, 1)
    elif isinstance(module, torch.nn.Conv2d):
        fan_in, fan_out, kernel = module.in_channels, module.out_channels, tuple(module.kernel_size)
    else:
        return f"is a {type(module).__name__}, not a Linear or Conv2d layer"
    lora_kernel = tuple(lora.down.shape[2:]) if lora.down.dim() == 4 else (1, 1)
    if (lora.down.shape[1], lora.up.shape[0], lora_kernel) != (fan_in, fan_out, kernel):
        return (f"expects {fan_in}->{fan_out} (kernel {kernel[0]}x{kernel[1]}), the LoRA has "
                f"{lora.down.shape[1]}->{lora.up.shape[0]} "
                f"(kernel {lora_kernel[0]}x{lora_kernel[1]})")
    return None


def _fit(module: torch.nn.Module, lora: LoraModule) -> LoraModule:
    """Reshape 1x1-conv factors for a Linear layer and the reverse (SD1 vs SD2 proj_in)."""
    dtype = module.weight.dtype
    down, up = lora.down, lora.up
    if isinstance(module, torch.nn.Linear) and down.dim() == 4:
        down, up = down.flatten(1), up.flatten(1)
    elif isinstance(module, torch.nn.Conv2d) and down.dim() == 2:
        down, up = down[:, :, None, None], up[:, :, None, None]
    return LoraModule(down=down.to(dtype), up=up.to(dtype), alpha=lora.alpha)


def _label(arch: str | None) -> str:
    return ARCH_LABELS.get(arch or "", "an unknown model")


def load_lora_into_pipeline(pipe, path_or_lorafile: str | os.PathLike[str] | LoraFile
                            | LycorisFile, adapter_name: str) -> LoadReport:
    """Load a LoRA as adapter `adapter_name`; refuse (pipeline untouched) when the LoRA was made
    for another architecture, fits none of the pipeline's modules, or the name is taken."""
    lora = path_or_lorafile
    source = "This LoRA"
    if not isinstance(lora, (LoraFile, LycorisFile)):
        source = Path(lora).name  # which of several files a refusal is about
        lora = read_network(lora)
    title = (lora.metadata.get("ss_output_name") or lora.metadata.get("modelspec.title")
             or source)
    target_arch = pipeline_arch(pipe)
    if lora.arch is not None and lora.arch != target_arch:
        raise LoraFormatError(f"{title} was made for {_label(lora.arch)}, this model is "
                              f"{_label(target_arch)}.", f"Load it on a {_label(lora.arch)} model.")
    matched: dict[str, LoraModule | tuple[torch.nn.Module, NetworkModule]] = {}
    paths: dict[str, str] = {}
    unmatched: list[str] = []
    misfits: list[str] = []
    modules_of = _module_index(pipe)
    for name, module in lora.modules.items():
        layer, path = _find_module(modules_of, name)
        if layer is None:
            unmatched.append(name)
            continue
        problem = _shape_problem(layer, module)
        if problem:
            misfits.append(f"{name} {problem}")
            continue
        fitted = (layer, module) if isinstance(module, NetworkModule) else _fit(layer, module)
        matched[name], paths[name] = fitted, path
    if misfits:
        raise LoraFormatError(
            f"{title} does not fit this model ({_label(target_arch)}): {len(misfits)} layer(s) "
            f"have other sizes, e.g. {misfits[0]}. It was made for a different architecture.",
            "Load it on the model family it was trained for.")
    if not matched:
        few = ", ".join(unmatched[:3])
        raise LoraFormatError(f"{title} fits none of this model's layers (e.g. {few}); loading "
                              "it would change nothing.", "Check that it is a LoRA for this model.")
    if adapter_name in _adapter_names(pipe):
        raise LoraFormatError(f"A LoRA named {adapter_name!r} is already loaded.",
                              "Choose another name or remove the loaded one first.")
    if isinstance(lora, LycorisFile):
        from lora_studio.core.generate.lycoris_layers import attach_network

        attach_network(pipe, adapter_name, [(model_path(name)[0], paths[name], layer, module)
                                            for name, (layer, module) in matched.items()])
        return LoadReport(adapter_name=adapter_name, matched=len(matched), unmatched=unmatched,
                          total=len(lora.modules))
    state_dict, _ = peft_state_dict(LoraFile(modules=matched), paths=paths)
    try:
        pipe.load_lora_weights(state_dict, adapter_name=adapter_name)
    except Exception as exc:  # diffusers/peft refused: leave no half-loaded adapter behind
        if adapter_name in _adapter_names(pipe):
            pipe.delete_adapters(adapter_name)
        raise LoraFormatError(f"{title} could not be loaded: {exc}") from exc
    return LoadReport(adapter_name=adapter_name, matched=len(matched), unmatched=unmatched,
                      total=len(lora.modules))


def _adapter_names(pipe) -> set[str]:
    from lora_studio.core.generate.lycoris_layers import network_names

    try:
        names = {n for names in pipe.get_list_adapters().values() for n in names}
    except Exception:  # a pipeline with no LoRA support yet reports nothing loaded
        names = set()
    return names | network_names(pipe)
