"""SDXL LoRAs we export load in the tools people generate with (issue 20).

1. Plain diffusers, in a fresh process that never imports LoRA Studio, loads our kohya-layout and
   diffusers-layout SDXL files into the UNet and both text encoders with every module of the file
   injected, each layer holding exactly the file's update, and renders the image LoRA Studio's own
   generate renders (same file, seed, steps, sampler, size). The LoRA has alpha != rank and mixed
   ranks in each component, so a dropped alpha or rank pattern shows.

2. The single-file tools (ComfyUI, A1111, Forge) find every kohya key we write in an SDXL
   checkpoint in the original (SGM) layout, the one `models/original_layout.py` writes. The rule,
   read from their loaders:

   - ComfyUI `comfy/lora.py` `model_lora_keys_unet`: each `diffusion_model.<path>.weight` of the
     UNet answers to `lora_unet_<path with "." -> "_">` (`model.` is stripped from checkpoint keys
     on load). A1111 `extensions-builtin/Lora/networks.py` `load_network`: an unmatched
     `lora_unet_...` key is retried as `diffusion_model_...` against the flattened module names.
   - CLIP-L, `conditioner.embedders.0.transformer.text_model.*` (HF names): ComfyUI
     `comfy/supported_models.py` `SDXL.process_clip_state_dict` renames it `clip_l.transformer.
     text_model.*`, and `model_lora_keys_clip` maps `lora_te1_text_model_encoder_layers_<N>_<c>`
     to `clip_l...encoder.layers.<N>.<c>.weight` for `c` in `LORA_CLIP_MAP` (`self_attn.{q,k,v,
     out}_proj`, `mlp.fc1`, `mlp.fc2`, flattened). A1111 replaces `lora_te1_text_model` with
     `0_transformer_text_model` (embedder 0's module names).
   - OpenCLIP-G, `conditioner.embedders.1.model.*`: ComfyUI renames it `clip_g.` and
     `comfy/utils.py` `clip_text_transformers_convert` turns it into HF names: the fused
     `transformer.resblocks.<N>.attn.in_proj_weight` is cut in three equal row blocks q, k, v,
     `attn.out_proj` -> `self_attn.out_proj`, `mlp.c_fc` -> `mlp.fc1`, `mlp.c_proj` -> `mlp.fc2`;
     `model_lora_keys_clip` maps those to `lora_te2_text_model_encoder_layers_<N>_<c>` once CLIP-L
     is present. A1111 `convert_diffusers_name_to_compvis` rewrites `lora_te2_text_model_encoder_
     layers_<N>_` to `1_model_transformer_resblocks_<N>_` (`self_attn` -> `attn`, `mlp_fc1` ->
     `mlp_c_fc`, `mlp_fc2` -> `mlp_c_proj`); `q/k/v_proj` name no module there, so `re_x_proj`
     takes the MultiheadAttention `..._attn` and `network_apply_weights` stacks the q, k, v
     updates onto its `in_proj_weight` in that order.

   So, in the checkpoint's own names (d = the width of OpenCLIP-G):
     lora_unet_<X>                      -> model.diffusion_model.<X, "_" read as ".">.weight
     lora_te1_text_model_<Y>            -> conditioner.embedders.0.transformer.text_model.<Y>.weight
     lora_te2_text_model_encoder_layers_<N>_
       self_attn_{q,k,v}_proj           -> conditioner.embedders.1.model.transformer.resblocks.<N>.
                                           attn.in_proj_weight, rows [i*d, (i+1)*d), i = 0, 1, 2
       self_attn_out_proj               -> ...resblocks.<N>.attn.out_proj.weight
       mlp_fc1 / mlp_fc2                -> ...resblocks.<N>.mlp.c_fc / mlp.c_proj .weight

   tests/single_file_keys.py writes both loaders' rules out, independent of LoRA Studio's naming
   code; every key must land on the same checkpoint weight (rows) under both, and that weight
   must be the very tensor of the diffusers layer the module was trained on.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from single_file_keys import (
    LORA_CLIP_MAP,
    a1111_layer_names,
    a1111_target,
    comfyui_key_map,
    target_weight,
)
from test_foreign_files import REQUEST, VISIBLE_MEAN, _diff, _same_render, pixels  # same folder

from lora_studio.core.generate.session import GenerationSession
from lora_studio.core.lora.formats import (
    lora_from_peft,
    lora_from_state_dict,
    read_lora,
    write_lora,
)
from lora_studio.core.lora.model import LoraFile, LoraModule
from lora_studio.core.lora.naming import canonical_to_kohya
from lora_studio.core.lora.testing import TEXT_TARGETS, UNET_TARGETS, make_random_lora
from lora_studio.core.models.original_layout import (
    SDXL_TE1_PREFIX,
    SDXL_TE2_PREFIX,
    clip_to_original,
    open_clip_to_original,
    pipeline_to_original_state_dict,
    unet_to_original,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SEED = 5
COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
# LoCon-style targets on top of kohya's default attention / proj / ff ones
CONV_TARGETS = ["conv1", "conv2", "conv_shortcut", "time_emb_proj", "downsamplers.0.conv",
                "upsamplers.0.conv"]
LAYOUTS = ("kohya", "diffusers")

# Runs in a fresh interpreter: nothing of LoRA Studio is imported there. It imports first and
# then reads its jobs from stdin, so the slow imports overlap with making the files here.
PLAIN_DIFFUSERS = r"""
import json, sys
import numpy as np, torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
from peft.tuners.lora import LoraLayer
from safetensors.torch import save_file

spec = json.loads(sys.stdin.read())
jobs, render, out = spec["jobs"], spec["render"], spec["out"]
images, pipes = {}, {}
for job in jobs:
    if job["model"] not in pipes:
        if job["sdxl"]:
            pipe = StableDiffusionXLPipeline.from_pretrained(job["model"])
        else:
            pipe = StableDiffusionPipeline.from_pretrained(
                job["model"], safety_checker=None, requires_safety_checker=False)
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        pipes[job["model"]] = pipe
    pipe = pipes[job["model"]]
    pipe.load_lora_weights(job["lora"], adapter_name="ours")
    deltas = {}
    for component in ("unet", "text_encoder", "text_encoder_2"):
        model = getattr(pipe, component, None)
        for name, module in model.named_modules() if model is not None else ():
            if isinstance(module, LoraLayer) and "ours" in module.lora_A:
                deltas[f"{component}.{name}"] = module.get_delta_weight("ours").float().contiguous()
    save_file(deltas, job["deltas"])
    if job["render"]:
        image = pipe(render["prompt"], num_inference_steps=render["steps"],
                     guidance_scale=render["cfg"], width=render["width"],
                     height=render["height"],
                     generator=torch.Generator("cpu").manual_seed(render["seed"])).images[0]
        images[job["name"]] = np.asarray(image, dtype=np.int16).tolist()
    pipe.delete_adapters("ours")
json.dump(images, open(out, "w"))
"""


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    """The tiny SDXL model: on disk, in memory (base weights, never adapted) and as the state
    of its single-file checkpoint (SGM / OpenCLIP names)."""
    from lora_studio.core.models.tiny import save_pipeline_folder
    from lora_studio.core.models.tiny_sdxl import tiny_sdxl_pipeline

    pipe = tiny_sdxl_pipeline(SEED)  # what make_tiny_sdxl_model(folder, SEED) writes
    folder = tmp_path_factory.mktemp("sdxl") / "tiny-sdxl"
    save_pipeline_folder(pipe, folder)
    return {"folder": folder, "pipe": pipe, "checkpoint": pipeline_to_original_state_dict(pipe)}


@pytest.fixture(scope="module")
def trained(sdxl):
    """A LoraFile as the trainer exports it (`lora_from_peft`) from random peft adapters on the
    UNet (attention, proj, ff and resnet / sampler convs) and both text encoders."""
    from peft import LoraConfig

    models = {c: copy.deepcopy(getattr(sdxl["pipe"], c)) for c in COMPONENTS}
    torch.manual_seed(SEED)
    for component, targets, alpha, pattern in (
            ("unet", UNET_TARGETS + CONV_TARGETS, 1.0, {"attn2.to_k": 2, "conv2": 2}),
            ("text_encoder", TEXT_TARGETS, 2.0, {"fc1": 2}),
            ("text_encoder_2", TEXT_TARGETS, 8.0, {"v_proj": 8})):
        models[component].add_adapter(LoraConfig(
            r=4, lora_alpha=alpha, rank_pattern=pattern, target_modules=targets,
            init_lora_weights=False))
    lora = lora_from_peft(**models, arch="sdxl")
    kinds = {n.rsplit(".", 1)[-1] for n in lora.component_modules("unet")}
    assert {"to_q", "proj_in", "proj", "conv1", "conv_shortcut", "conv"} <= kinds
    assert len(lora.component_modules("text_encoder")) == 12
    assert len(lora.component_modules("text_encoder_2")) == 12
    assert {m.rank for m in lora.modules.values()} == {2, 4, 8}
    return lora


@pytest.fixture(scope="module")
def files(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sdxl_export")
    return {layout: write_lora(trained, folder / f"{layout}.safetensors", layout=layout)
            for layout in LAYOUTS}


@pytest.fixture(scope="module")
def sd1_file(tiny_model_dir, tmp_path_factory):
    lora = make_random_lora(tiny_model_dir, rank=4, alpha=2.0, seed=3)
    path = tmp_path_factory.mktemp("sd1_export") / "diffusers.safetensors"
    return lora, write_lora(lora, path, layout="diffusers")


@pytest.fixture(scope="module")
def worker():
    """The plain-diffusers interpreter, started before anything else here needs a model."""
    proc = subprocess.Popen([sys.executable, "-c", PLAIN_DIFFUSERS], stdin=subprocess.PIPE,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    yield proc
    if proc.poll() is None:  # a fixture before the jobs were sent failed
        proc.kill()
        proc.wait()


def _studio_renders(folder: Path, lora: Path) -> tuple[np.ndarray, np.ndarray]:
    """LoRA Studio's generate with the LoRA at strength 1, and without it."""
    session = GenerationSession(folder)
    base = pixels(session)
    report = session.add_lora(lora, weight=1.0)
    assert (report.matched, report.unmatched) == (report.total, [])
    return pixels(session), base


@pytest.fixture(scope="module")
def renders(worker, sdxl, files, sd1_file, tiny_model_dir, tmp_path_factory):
    """{"plain": name -> (layer deltas, render or None) from plain diffusers, "studio": (render
    with the kohya file, render without)}; LoRA Studio renders while plain diffusers works."""
    folder = tmp_path_factory.mktemp("plain")
    jobs = [{"name": layout, "model": str(sdxl["folder"]), "sdxl": True, "lora": str(path),
             "render": True} for layout, path in files.items()]
    jobs.append({"name": "sd1", "model": str(tiny_model_dir), "sdxl": False,
                 "lora": str(sd1_file[1]), "render": False})
    for job in jobs:
        job["deltas"] = str(folder / f"{job['name']}.deltas.safetensors")
    assert REQUEST.sampler == "Euler" and not REQUEST.negative
    render = {"prompt": REQUEST.prompt, "steps": REQUEST.steps, "cfg": REQUEST.cfg,
              "seed": REQUEST.seed, "width": REQUEST.width, "height": REQUEST.height}
    out = folder / "images.json"
    worker.stdin.write(json.dumps({"jobs": jobs, "render": render, "out": str(out)}).encode())
    worker.stdin.close()
    studio = _studio_renders(sdxl["folder"], files["kohya"])
    assert worker.wait(timeout=300) == 0
    images = json.loads(out.read_text())
    plain = {job["name"]: (load_file(job["deltas"]),
                           np.asarray(images[job["name"]], dtype=np.int16)
                           if job["name"] in images else None) for job in jobs}
    return {"plain": plain, "studio": studio}


# ----------------------------------------------------------------------------- plain diffusers
def _file_modules(path: Path) -> dict[str, int]:
    """Modules per component, counted from the file's own keys."""
    prefixes = {"lora_unet_": "unet", "lora_te1_": "text_encoder", "lora_te2_": "text_encoder_2",
                "unet.": "unet", "text_encoder.": "text_encoder",
                "text_encoder_2.": "text_encoder_2"}
    counts = dict.fromkeys(COMPONENTS, 0)
    for key in load_file(str(path)):
        if key.endswith((".lora_down.weight", ".lora_A.weight")):
            counts[next(c for p, c in prefixes.items() if key.startswith(p))] += 1
    return counts


def _check_deltas(deltas: dict[str, torch.Tensor], lora: LoraFile) -> None:
    """Each layer plain diffusers adapted holds exactly the module's `alpha/rank * up @ down`,
    and no layer the LoRA lacks was adapted (names: transformers 4 or 5 text encoders)."""
    got = {}
    for key, delta in deltas.items():
        component, _, path = key.partition(".")
        got[f"{component}.{path.removeprefix('text_model.')}"] = delta
    assert set(got) == set(lora.modules)
    for name, module in lora.modules.items():
        torch.testing.assert_close(got[name], module.delta_weight(), rtol=1e-4, atol=1e-6,
                                   msg=name)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_plain_diffusers_injects_every_module_of_our_sdxl_file(layout, renders, files, trained):
    deltas, _ = renders["plain"][layout]
    injected = {c: sum(k.startswith(c + ".") for k in deltas) for c in COMPONENTS}
    assert injected == _file_modules(files[layout]) == {
        c: len(trained.component_modules(c)) for c in COMPONENTS}
    _check_deltas(deltas, trained)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_plain_diffusers_renders_what_lora_studio_renders(layout, renders):
    _, image = renders["plain"][layout]
    ours, base = renders["studio"]
    assert np.abs(ours - base).mean() > VISIBLE_MEAN  # the LoRA changes the image visibly
    assert _same_render(image, ours), _diff(image, ours)


def test_sd1_diffusers_layout_loads_into_the_text_encoder_in_plain_diffusers(renders, sd1_file):
    """`text_encoder.text_model.*` keys load into transformers 5's flattened CLIPTextModel."""
    lora, path = sd1_file
    assert any(k.startswith("text_encoder.text_model.encoder.layers.")
               for k in load_file(str(path)))
    _check_deltas(renders["plain"]["sd1"][0], lora)


# ----------------------------------------------------------------------------- key names
def test_diffusers_layout_names_both_text_encoders_under_text_model(files):
    """transformers 4 names for both encoders, whatever transformers is installed: the
    `text_encoder(_2).text_model.encoder.layers.<N>.<c>` keys ComfyUI's `model_lora_keys_clip`
    maps ("diffusers lora") and diffusers loads into either CLIPTextModel."""
    keys = set(load_file(str(files["diffusers"])))
    stems = {k.rsplit(".", 2)[0] for k in keys if k.startswith("text_encoder")}
    comfyui = {f"{te}.text_model.encoder.layers.{b}.{c}" for b in range(32)
               for te in ("text_encoder", "text_encoder_2") for c in LORA_CLIP_MAP}
    assert len(stems) == 24 and stems <= comfyui
    assert "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert "text_encoder_2.text_model.encoder.layers.1.mlp.fc2.lora_B.weight" in keys


def test_reading_accepts_text_encoder_keys_with_and_without_text_model(files, trained):
    tensors = load_file(str(files["diffusers"]))
    metadata = read_lora(files["diffusers"]).metadata
    stripped = {re.sub(r"^(text_encoder(?:_2)?)\.text_model\.", r"\1.", k): v
                for k, v in tensors.items()}
    for variant in (tensors, stripped):
        back = lora_from_state_dict(variant, metadata)
        assert set(back.modules) == set(trained.modules)
        for name, module in trained.modules.items():
            torch.testing.assert_close(back.modules[name].delta_weight(), module.delta_weight(),
                                       rtol=1e-5, atol=1e-7, msg=name)


# ----------------------------------------------------------------------------- single-file tools
def _every_layer(pipe) -> list[str]:
    """Canonical names of every Linear / Conv2d of the UNet and of the text encoders' layers."""
    names = []
    for component in COMPONENTS:
        for name, module in getattr(pipe, component).named_modules():
            if (isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))
                    and (component == "unet" or ".layers." in name)):
                names.append(f"{component}.{name.removeprefix('text_model.')}")
    return names


def _module(pipe, name: str) -> torch.nn.Module:
    component, _, path = name.partition(".")
    model = getattr(pipe, component)
    if component != "unet" and hasattr(model, "text_model"):  # transformers 4 / WithProjection
        path = "text_model." + path
    return model.get_submodule(path)


def test_every_kohya_key_we_write_lands_on_its_layer_in_the_sdxl_checkpoint(sdxl, tmp_path):
    """A LoRA on every Linear / Conv2d (LoCon included), written in kohya layout: under both
    tools' rules each key finds the checkpoint weight that IS the layer's weight (same values),
    with factors of its shape."""
    pipe, checkpoint = sdxl["pipe"], sdxl["checkpoint"]
    g = torch.Generator().manual_seed(SEED)
    modules = {}
    for name in _every_layer(pipe):
        weight = _module(pipe, name).weight
        kernel = (1, 1) if weight.dim() == 4 else ()
        modules[name] = LoraModule(torch.randn(1, *weight.shape[1:], generator=g),
                                   torch.randn(weight.shape[0], 1, *kernel, generator=g), 1.0)
    path = write_lora(LoraFile(modules, arch="sdxl"), tmp_path / "all.safetensors")
    tensors = load_file(str(path))
    # which module each key holds, told by its (random, unique) factors, not by our naming code
    by_factor = {m.down.numpy().tobytes(): name for name, m in modules.items()}
    comfy, names = comfyui_key_map(checkpoint), a1111_layer_names(checkpoint)
    stems = {k.rsplit(".", 2)[0] for k in tensors if k.endswith(".lora_down.weight")}
    assert len(stems) == len(modules) > 200
    for stem in stems:
        name = by_factor[tensors[f"{stem}.lora_down.weight"].numpy().tobytes()]
        assert stem in comfy, f"ComfyUI finds no weight for {stem} ({name})"
        assert a1111_target(stem, names) == comfy[stem], stem
        weight = target_weight(checkpoint, comfy[stem])
        assert torch.equal(weight, _module(pipe, name).weight.detach()), (stem, name)
        delta = LoraModule(tensors[f"{stem}.lora_down.weight"], tensors[f"{stem}.lora_up.weight"],
                           1.0).delta_weight()
        assert delta.shape == weight.shape, stem


def test_kohya_names_fit_the_full_size_sdxl_checkpoint():
    """The same rules on the real SDXL architecture (3 levels, 10-deep transformers, 12 + 32
    text layers; built on the meta device): every layer's kohya stem finds a weight of its
    shape, and no two stems share one."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from lora_studio.core.paths import configs_dir

    folder = configs_dir() / "sdxl"
    config = json.loads((folder / "unet" / "config.json").read_text())
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
        te1 = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
    checkpoint = unet_to_original(unet.state_dict(), config)
    checkpoint.update(clip_to_original(te1.state_dict(), SDXL_TE1_PREFIX))
    checkpoint.update(open_clip_to_original(te2.state_dict(), SDXL_TE2_PREFIX))
    pipe = type("Pipe", (), {"unet": unet, "text_encoder": te1, "text_encoder_2": te2})
    comfy, names = comfyui_key_map(checkpoint), a1111_layer_names(checkpoint)
    targets = set()
    layers = _every_layer(pipe)
    assert sum(n.startswith("text_encoder.") for n in layers) == 12 * 6  # CLIP-L
    assert sum(n.startswith("text_encoder_2.") for n in layers) == 32 * 6  # OpenCLIP-G
    for name in layers:
        stem = canonical_to_kohya(name, sdxl=True)
        assert stem in comfy and a1111_target(stem, names) == comfy[stem], (stem, name)
        weight = target_weight(checkpoint, comfy[stem])
        assert weight.shape == _module(pipe, name).weight.shape, stem
        targets.add(comfy[stem])
    assert len(targets) == len(layers)
