"""Preview images during training: inference, exactly as Generate renders the saved LoRA.

A preview at step N is what `lora-studio generate` renders with that step's LoRA file at
strength 1 and the same prompt, negative prompt, seed, size, steps, CFG scale and sampler, pixel
for pixel: the trainer writes the LoRA as it would save it (its layout and save precision), and
a `GenerationSession` wrapped around the training networks (`GenerationSession.around`) loads
that file as its own adapter and renders through the same code as the Generate tab: the
sampler built from the base model's scheduler config, CFG, the negative prompt, the LoRA
loaded by `lora.apply` and set by `set_adapters`, the shared VAE decode and the A1111 PNG info.
The training adapter is switched off while the file's adapter renders, and switched back on
(trainable, its scale untouched) afterwards, so previews change nothing in the training.
On a GPU with mixed precision the trained networks keep accelerate's autocast around their
forward, so there a preview and Generate can differ by rounding; in fp32 they are identical.

Each prompt line may carry kohya's inline options (`a cat --n blurry --w 768 --h 512 --d 7 --l 6
--s 28 --ss euler_a`, see `sample_prompts.py`); what a line does not set comes from [sample] and
the dataset resolution. A preview's image carries Generate's `parameters` text
(`image.info["parameters"]`, also written into `<output>/samples/step-NNNNNN-i.png`), so the
event and the file say which seed, size, steps, CFG scale, sampler and LoRA made it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lora_studio.core import events as ev
from lora_studio.core.train.config import TrainConfig


def render_previews(cfg: TrainConfig, step: int, family, lora_path: Path, *,
                    unwrap: Callable[[Any], Any] = lambda model: model) -> Iterator[ev.Preview]:
    """Yield one Preview per `sample.prompts` entry, each rendered with its own options and the
    LoRA file `lora_path` at strength 1 (the caller puts the networks back in train mode
    afterwards). A line with an option it cannot read raises ConfigError before anything
    renders."""
    from lora_studio.core.generate.pnginfo import PARAMETERS_KEY, save_png_with_parameters
    from lora_studio.core.generate.samplers import make_scheduler
    from lora_studio.core.generate.session import GenerationRequest, GenerationSession
    from lora_studio.core.train.preview_check import preview_problem
    from lora_studio.core.train.sample_prompts import sample_prompts

    prompts = sample_prompts(cfg)
    pipe = family.preview_pipeline(make_scheduler(family.scheduler_config, cfg.sample.sampler),
                                   unwrap)
    session = GenerationSession.around(pipe, family.source, family.scheduler_config)
    networks = [unwrap(network) for network in family.networks().values()]
    for network in networks:
        network.eval()
    samples_dir = cfg.output_dir / "samples"
    with _file_adapter(session, lora_path, networks):
        for index, sp in enumerate(prompts):
            request = GenerationRequest(prompt=sp.prompt, negative=sp.negative, steps=sp.steps,
                                        cfg=sp.cfg, seed=sp.seed, width=sp.width,
                                        height=sp.height, sampler=sp.sampler)
            [result] = session.generate(request)
            image = result.image
            image.info[PARAMETERS_KEY] = result.parameters
            save_png_with_parameters(image, samples_dir / f"step-{step:06d}-{index}.png",
                                     result.parameters)
            yield ev.Preview(step=step, prompt=sp.prompt, image=image, index=index,
                             problem=preview_problem(image) or "")


@contextlib.contextmanager
def _file_adapter(session, lora_path: Path, networks: list[Any]):
    """`lora_path` loaded into the session as the only active adapter; afterwards it is deleted
    and each LoRA layer's own active adapters (the training one) are switched back on, which
    also makes them trainable again (peft's `set_adapter`)."""
    from lora_studio.core.generate.adapters import lora_layers

    active = [(layer, list(layer.active_adapters))
              for network in networks for _, layer in lora_layers(network)]
    report = session.add_lora(lora_path, 1.0)
    try:
        yield
    finally:
        with warnings.catch_warnings():  # peft: "Adapter ... was active which is now deleted"
            warnings.filterwarnings("ignore", message="Adapter .* was active")
            session.remove_lora(report.adapter_name)
        for layer, names in active:
            layer.set_adapter(names)

