"""Import the engine ahead of the first job, so a run's set-up does not hold the window.

Importing torch, diffusers, transformers, peft and accelerate takes seconds, and much of it
(loading extension libraries, compiling module code, building thousands of classes) holds
Python's GIL in stretches of 100-400 ms: whatever thread imports them, the GUI thread cannot run
Python for that long. The app calls `import_engine()` in a background thread right after the
window first paints (with the device probe), when nothing moves on screen yet; jobs call it too,
so a job started while the warm-up runs waits for it instead of importing the same modules from
a second thread at once (transformers' and diffusers' lazy modules are not safe for that).
"""

from __future__ import annotations

import gc
import importlib
import threading

# What training and generation import on their way; the pipelines are reached through
# diffusers' lazy attributes, which import their modules.
ENGINE_MODULES = (
    "torch",
    "safetensors.torch",
    "transformers",
    "diffusers",
    "peft",
    "accelerate",
    "lora_studio.core.train.trainer",
    "lora_studio.core.train.preview",
    "lora_studio.core.generate.session",
    "lora_studio.core.generate.decode",
    "lora_studio.core.lora.apply",
    "lora_studio.core.lora.formats",
    "diffusers.loaders.peft",
    "diffusers.loaders.lora_pipeline",
    "peft.utils.save_and_load",
)
_LAZY_ATTRIBUTES = {
    "diffusers": ("StableDiffusionPipeline", "StableDiffusionXLPipeline",
                  "UNet2DConditionModel", "AutoencoderKL"),
    "transformers": ("CLIPTextModel", "CLIPTextModelWithProjection", "CLIPTokenizer"),
}
_lock = threading.Lock()
_done = False


def import_engine() -> None:
    """Import everything a training or generation job needs (once per process; a second caller
    waits for the first)."""
    global _done
    with _lock:
        if _done:
            return
        from lora_studio.core.dataset.captions import caption_tokenizer

        caption_tokenizer()  # transformers' first import, under the captions' own lock
        for name in ENGINE_MODULES:
            module = importlib.import_module(name)
            for attribute in _LAZY_ATTRIBUTES.get(name, ()):
                getattr(module, attribute)
        _first_save()
        # Hundreds of thousands of objects now live for good (modules, classes, functions); a
        # full collection walks them all, holding the GIL ~250 ms (measured mid-run, a stall
        # of the window). Frozen, later collections skip them.
        gc.collect()
        gc.freeze()
        _done = True


def _first_save() -> None:
    """safetensors' first save initialises its machinery (a ~250 ms stall measured at a run's
    first preview): do it now, in memory."""
    import torch
    from safetensors.torch import save

    save({"warm": torch.zeros(2, 2)})


def engine_imported() -> bool:
    return _done


def prefetch_model(spec) -> None:
    """Load the tokenizers of the base model `spec` (see `models/tokenizers.py`) so that a job
    on it does not build them while the window waits; a spec that cannot be resolved is left
    for the job to report."""
    from lora_studio.core.errors import StudioError
    from lora_studio.core.models.loading import resolve_model
    from lora_studio.core.models.single_file import default_config_dir
    from lora_studio.core.models.tokenizers import pipeline_tokenizers

    import_engine()  # transformers is imported by one thread at a time
    try:
        source = resolve_model(spec)
    except (StudioError, OSError):
        return
    folder = source.path if source.path.is_dir() else default_config_dir(source.arch)
    pipeline_tokenizers(folder)
