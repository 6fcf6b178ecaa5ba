"""Foreign LoRA files (issue 5): what other tools write loads, inspects, merges and renders
exactly; what LoRA Studio cannot use is refused with a message naming the problem, and the
session that refused it keeps working.

Each accepted file is written here key by key the way its tool writes it (kohya / A1111 with
alpha != rank or no alpha, fp16 / bf16, text-encoder keys, LyCORIS LoCon conv keys, kohya SDXL
with SGM UNet names, old diffusers, PEFT with and without the `unet.` prefix), fitted to the tiny
SD 1.x or SDXL model. The key -> layer map of every case is written out by hand below, not taken
from LoRA Studio's naming code, and the expected update of each layer,
`W += strength * alpha / rank * up @ down`, is computed from the raw tensors. A wrong alpha, a
transposed conv kernel, a mis-mapped SGM block or a dropped text-encoder key fails the per-layer
check, and the render is compared with one from base weights edited directly.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from lora_studio.cli import main as cli_main
from lora_studio.core.errors import LoraFormatError
from lora_studio.core.generate.session import GenerationRequest, GenerationSession
from lora_studio.core.lora.formats import read_lora
from lora_studio.core.lora.inspect import inspect_lora
from lora_studio.core.lora.merge import merge_loras

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              # peft's note when a second adapter joins a model (two LoRAs stacked)
              pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute")]

STRENGTH = 0.8
REQUEST = GenerationRequest("a red star on a blue background", steps=3, cfg=5.0, seed=11,
                            width=32, height=32, sampler="Euler")
# Renders of the same update, once through the LoRA adapter and once from edited base weights,
# differ only by float rounding; a LoRA's own effect is far larger (checked per case).
SAME_MAX, SAME_MEAN, VISIBLE_MEAN = 2, 0.1, 3.0
W_FOREIGN, W_OTHER = 0.7, -0.5


# ----------------------------------------------------------------------------- the cases
@dataclass(frozen=True)
class Layer:
    stem: str  # the module's name as the file's tool writes it (key without the factor suffix)
    component: str  # the pipeline component holding the layer
    path: str  # the layer's name in that component
    rank: int | None = None  # None: the case's rank

    @property
    def canonical(self) -> str:
        """LoRA Studio's name for the module (merge output keys)."""
        return f"{self.component}.{self.path.removeprefix('text_model.')}"


@dataclass(frozen=True)
class Case:
    id: str
    model: str  # "sd1" | "sdxl"
    layout: str  # how keys are written: "kohya" | "diffusers-old" | "peft"
    layers: tuple[Layer, ...]
    rank: int = 4
    alpha: float | None = 1.0  # None: no alpha anywhere in the file, so alpha = rank
    alpha_in: str = "tensor"  # "tensor" (kohya `.alpha`) | "metadata" (lora_adapter_metadata)
    dtype: torch.dtype = torch.float32
    metadata: dict[str, str] = field(default_factory=dict)
    # what inspect must report
    kind: str = "LoRA"
    reported_layout: str = "kohya"
    arch: str | None = None

    def rank_of(self, layer: Layer) -> int:
        return layer.rank or self.rank

    def alpha_of(self, layer: Layer) -> float:
        return float(self.rank_of(layer)) if self.alpha is None else float(self.alpha)


_ATTN = ("proj_in", "proj_out") + tuple(f"transformer_blocks.0.{n}" for n in (
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
    "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2"))
SD1_ATTN = tuple(f"{block}.{name}" for block in ("down_blocks.0.attentions.0",
                                                 "mid_block.attentions.0",
                                                 "up_blocks.1.attentions.1") for name in _ATTN)
SD1_TE = tuple(f"encoder.layers.{i}.{name}" for i in (0, 1) for name in (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
    "mlp.fc1", "mlp.fc2"))
SD1_CONV = ("conv_in", "down_blocks.0.resnets.0.conv1", "down_blocks.0.resnets.0.conv2",
            "down_blocks.0.downsamplers.0.conv", "down_blocks.1.resnets.0.conv_shortcut",
            "mid_block.resnets.0.time_emb_proj", "mid_block.resnets.1.conv2",
            "up_blocks.0.resnets.1.conv1", "up_blocks.0.upsamplers.0.conv", "conv_out")


def kohya_unet(path: str, rank: int | None = None) -> Layer:
    return Layer("lora_unet_" + path.replace(".", "_"), "unet", path, rank)


def kohya_te(path: str) -> Layer:
    return Layer("lora_te_text_model_" + path.replace(".", "_"), "text_encoder", path)


def sgm(stem: str, path: str, rank: int | None = None) -> Layer:
    """A kohya SDXL UNet key (original SGM block names) and the diffusers layer it means."""
    return Layer("lora_unet_" + stem, "unet", path, rank)


# kohya SDXL: input_blocks 1-2 / 4-5 are down_blocks 0 / 1 (resnet .0, attention .1), 3 the
# down-sampler; middle_block 0/1/2 = resnet, attention, resnet; output_blocks 0-2 / 3-5 are
# up_blocks 0 / 1, .2 of output_blocks 2 its up-sampler (the tiny SDXL has two levels).
SDXL_SGM_ATTN = (
    sgm("input_blocks_4_1_proj_in", "down_blocks.1.attentions.0.proj_in"),
    sgm("input_blocks_4_1_transformer_blocks_0_attn1_to_q",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"),
    sgm("input_blocks_4_1_transformer_blocks_1_attn2_to_k",
        "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k"),
    sgm("input_blocks_5_1_transformer_blocks_0_ff_net_0_proj",
        "down_blocks.1.attentions.1.transformer_blocks.0.ff.net.0.proj"),
    sgm("input_blocks_5_1_proj_out", "down_blocks.1.attentions.1.proj_out"),
    sgm("middle_block_1_transformer_blocks_0_attn1_to_out_0",
        "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0"),
    sgm("middle_block_1_transformer_blocks_1_attn2_to_v",
        "mid_block.attentions.0.transformer_blocks.1.attn2.to_v"),
    sgm("output_blocks_0_1_transformer_blocks_0_attn1_to_k",
        "up_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k"),
    sgm("output_blocks_1_1_transformer_blocks_1_ff_net_2",
        "up_blocks.0.attentions.1.transformer_blocks.1.ff.net.2"),
    sgm("output_blocks_2_1_transformer_blocks_0_attn2_to_q",
        "up_blocks.0.attentions.2.transformer_blocks.0.attn2.to_q"),
    sgm("output_blocks_2_1_proj_out", "up_blocks.0.attentions.2.proj_out"),
)
SDXL_TE = (
    Layer("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", "text_encoder",
          "encoder.layers.0.self_attn.q_proj"),
    Layer("lora_te1_text_model_encoder_layers_1_mlp_fc1", "text_encoder", "encoder.layers.1.mlp.fc1"),
    Layer("lora_te2_text_model_encoder_layers_0_self_attn_v_proj", "text_encoder_2",
          "text_model.encoder.layers.0.self_attn.v_proj"),
    Layer("lora_te2_text_model_encoder_layers_1_mlp_fc2", "text_encoder_2",
          "text_model.encoder.layers.1.mlp.fc2"),
)
SDXL_SGM_CONV = (
    sgm("input_blocks_0_0", "conv_in"),
    sgm("time_embed_0", "time_embedding.linear_1"),
    sgm("label_emb_0_2", "add_embedding.linear_2"),
    sgm("input_blocks_1_0_in_layers_2", "down_blocks.0.resnets.0.conv1"),
    sgm("input_blocks_2_0_out_layers_3", "down_blocks.0.resnets.1.conv2"),
    sgm("input_blocks_2_0_emb_layers_1", "down_blocks.0.resnets.1.time_emb_proj"),
    sgm("input_blocks_3_0_op", "down_blocks.0.downsamplers.0.conv"),
    sgm("input_blocks_4_0_skip_connection", "down_blocks.1.resnets.0.conv_shortcut"),
    sgm("middle_block_0_in_layers_2", "mid_block.resnets.0.conv1"),
    sgm("middle_block_2_out_layers_3", "mid_block.resnets.1.conv2"),
    sgm("output_blocks_1_0_skip_connection", "up_blocks.0.resnets.1.conv_shortcut"),
    sgm("output_blocks_2_2_conv", "up_blocks.0.upsamplers.0.conv"),
    sgm("output_blocks_4_0_in_layers_2", "up_blocks.1.resnets.1.conv1"),
    sgm("out_2", "conv_out"),
)
_OLD_PROCESSOR = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"

CASES = [
    Case("kohya_rank4_alpha1", "sd1", "kohya", tuple(map(kohya_unet, SD1_ATTN)), rank=4,
         alpha=1.0, metadata={"ss_base_model_version": "sd_v1", "ss_network_dim": "4",
                              "ss_network_alpha": "1"}, arch="sd1"),
    Case("kohya_no_alpha", "sd1", "kohya", tuple(map(kohya_unet, SD1_ATTN[::2])), rank=4,
         alpha=None),
    Case("kohya_fp16", "sd1", "kohya", tuple(map(kohya_unet, SD1_ATTN)), rank=8, alpha=4.0,
         dtype=torch.float16),
    Case("kohya_bf16", "sd1", "kohya", tuple(map(kohya_unet, SD1_ATTN)), rank=4, alpha=8.0,
         dtype=torch.bfloat16),
    Case("kohya_text_encoder", "sd1", "kohya",
         tuple(map(kohya_te, SD1_TE)) + tuple(map(kohya_unet, SD1_ATTN[6:8])), rank=4, alpha=2.0),
    Case("kohya_locon_conv", "sd1", "kohya",
         tuple(map(kohya_unet, SD1_ATTN[:4]))
         + tuple(kohya_unet(p, rank=2) for p in SD1_CONV), rank=4, alpha=1.0, kind="LoCon"),
    Case("sdxl_kohya_sgm_names", "sdxl", "kohya", SDXL_SGM_ATTN + SDXL_TE, rank=4, alpha=1.0,
         arch="sdxl"),
    Case("sdxl_locon_sgm_names", "sdxl", "kohya", SDXL_SGM_CONV, rank=2, alpha=1.0,
         dtype=torch.float16, kind="LoCon", arch="sdxl"),
    Case("diffusers_old_layout", "sd1", "diffusers-old",
         tuple(Layer(f"unet.{p}", "unet", p) for p in SD1_ATTN[6:])
         + (Layer(f"unet.{_OLD_PROCESSOR}.processor.to_k_lora", "unet", f"{_OLD_PROCESSOR}.to_k"),
            Layer(f"unet.{_OLD_PROCESSOR}.processor.to_out_lora", "unet",
                  f"{_OLD_PROCESSOR}.to_out.0"))
         + tuple(Layer(f"text_encoder.text_model.{p}.lora_linear_layer", "text_encoder", p)
                 for p in SD1_TE[:6]),
         rank=4, alpha=None, reported_layout="diffusers"),
    Case("peft_unet_prefix_alpha_in_metadata", "sd1", "peft",
         tuple(Layer(f"unet.{p}", "unet", p) for p in SD1_ATTN)
         + tuple(Layer(f"text_encoder.{p}", "text_encoder", p) for p in SD1_TE),
         rank=4, alpha=2.0, alpha_in="metadata", reported_layout="diffusers"),
    Case("peft_no_prefix", "sd1", "peft",
         tuple(Layer(f"base_model.model.{p}", "unet", p) for p in SD1_ATTN), rank=4, alpha=None,
         reported_layout="peft"),
    Case("sdxl_peft_both_text_encoders", "sdxl", "peft",
         tuple(Layer(f"unet.{x.path}", "unet", x.path) for x in SDXL_SGM_ATTN)
         + tuple(Layer(f"{x.component}.{x.path}", x.component, x.path) for x in SDXL_TE),
         rank=4, alpha=2.0, alpha_in="metadata", reported_layout="diffusers", arch="sdxl"),
]
CASE_IDS = [case.id for case in CASES]

# A second, plain kohya file per model to merge with (rank 2, alpha 1, float32): it shares a
# linear, a 3x3 conv and a text-encoder layer with the cases and has one layer of its own.
OTHER = {
    "sd1": Case("other_sd1", "sd1", "kohya", (
        kohya_unet("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"),
        kohya_unet("down_blocks.0.resnets.0.conv1"), kohya_te("encoder.layers.0.self_attn.q_proj"),
        kohya_unet("up_blocks.0.resnets.0.conv2")), rank=2, alpha=1.0),
    "sdxl": Case("other_sdxl", "sdxl", "kohya", (
        SDXL_SGM_ATTN[1], SDXL_SGM_CONV[3], SDXL_TE[2],
        sgm("output_blocks_5_0_out_layers_3", "up_blocks.1.resnets.2.conv2")), rank=2, alpha=1.0),
}


# ----------------------------------------------------------------------------- writing files
def _factor_keys(layout: str, stem: str) -> tuple[str, str, str | None]:
    if layout == "kohya":
        return f"{stem}.lora_down.weight", f"{stem}.lora_up.weight", f"{stem}.alpha"
    if layout == "diffusers-old":  # `<path>.lora.down.weight`; processor / text-encoder forms
        base = stem if stem.endswith(("_lora", ".lora_linear_layer")) else f"{stem}.lora"
        return f"{base}.down.weight", f"{base}.up.weight", None
    return f"{stem}.lora_A.weight", f"{stem}.lora_B.weight", None


def _factors(weight: torch.Tensor, rank: int, scale: float, g: torch.Generator):
    """Random down/up for a layer, sized so each update is about half the layer's weights."""
    out_features, fan_in = weight.shape[0], weight[0].numel()
    kernel = tuple(weight.shape[2:])
    down = torch.randn(rank, *weight.shape[1:], generator=g) / math.sqrt(fan_in)
    up_std = 0.5 * float(weight.float().std()) * math.sqrt(fan_in / rank) / (scale * STRENGTH)
    up = torch.randn(out_features, rank, *((1, 1) if kernel else ()), generator=g) * up_std
    return down, up


def layer_module(pipe, layer: Layer) -> torch.nn.Module:
    module = getattr(pipe, layer.component).get_submodule(layer.path)
    return module.get_base_layer() if hasattr(module, "get_base_layer") else module


def write_case(case: Case, pipe, path: Path, seed: int) -> dict[Layer, torch.Tensor]:
    """Write `case` as its tool would; returns layer -> expected update at strength 1."""
    g = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    expected: dict[Layer, torch.Tensor] = {}
    for layer in case.layers:
        weight = layer_module(pipe, layer).weight.detach()
        rank, alpha = case.rank_of(layer), case.alpha_of(layer)
        down, up = (t.to(case.dtype) for t in _factors(weight, rank, alpha / rank, g))
        down_key, up_key, alpha_key = _factor_keys(case.layout, layer.stem)
        tensors[down_key], tensors[up_key] = down, up
        if case.alpha is not None and case.alpha_in == "tensor":
            tensors[alpha_key] = torch.tensor(alpha, dtype=case.dtype)
        product = up.float().flatten(1) @ down.float().flatten(1)
        expected[layer] = (alpha / rank) * product.reshape(weight.shape)
    metadata = dict(case.metadata)
    if case.alpha_in == "metadata":  # what diffusers' save_lora_weights writes
        flat = {}
        for component in sorted({x.component for x in case.layers}):
            flat.update({f"{component}.r": case.rank, f"{component}.lora_alpha": case.alpha,
                         f"{component}.use_dora": False, f"{component}.use_rslora": False,
                         f"{component}.target_modules": sorted(
                             {x.path.rsplit(".", 1)[-1] for x in case.layers})})
        metadata["lora_adapter_metadata"] = json.dumps(flat, indent=2, sort_keys=True)
    save_file(tensors, str(path), metadata={"format": "pt", **metadata})
    return expected


# ----------------------------------------------------------------------------- the models
def pixels(session: GenerationSession) -> np.ndarray:
    return np.asarray(session.generate(REQUEST)[0].image, dtype=np.int16)


class Rig:
    """A tiny model twice: `session` takes LoRA files, `reference` never holds a LoRA and has
    the expected updates added to its base weights directly."""

    def __init__(self, folder: Path) -> None:
        self.session = GenerationSession(folder)
        self.reference = GenerationSession(folder)
        self.base_image = pixels(self.reference)

    def lora_image(self, path: Path) -> np.ndarray:
        """The session's render with the LoRA at `path` loaded at STRENGTH (then removed)."""
        report = self.session.add_lora(path, weight=STRENGTH)
        try:
            return pixels(self.session)
        finally:
            self.session.remove_lora(report.adapter_name)

    def reference_image(self, updates: dict[Layer, torch.Tensor], strength: float) -> np.ndarray:
        pipe = self.reference.pipeline
        saved = {}
        try:
            with torch.no_grad():
                for layer, delta in updates.items():
                    weight = layer_module(pipe, layer).weight
                    saved[layer] = weight.detach().clone()
                    weight += (strength * delta).to(weight.dtype)
            return pixels(self.reference)
        finally:
            with torch.no_grad():
                for layer, before in saved.items():
                    layer_module(pipe, layer).weight.copy_(before)


@pytest.fixture(scope="module")
def rigs(tiny_model_dir, tmp_path_factory):
    """model -> Rig, built on first use (the SDXL one only when an SDXL case runs)."""
    built: dict[str, Rig] = {}

    def get(model: str) -> Rig:
        if model not in built:
            folder = tiny_model_dir
            if model == "sdxl":
                from lora_studio.core.models.tiny_sdxl import make_tiny_sdxl_model

                folder = make_tiny_sdxl_model(tmp_path_factory.mktemp("sdxl") / "tiny-sdxl", 5)
            built[model] = Rig(folder)
        return built[model]

    return get


@pytest.fixture(scope="module")
def files(rigs, tmp_path_factory):
    """case id -> (path, expected update per layer), each written once."""
    folder = tmp_path_factory.mktemp("foreign")
    written: dict[str, tuple[Path, dict[Layer, torch.Tensor]]] = {}

    def get(case: Case):
        if case.id not in written:
            pipe = rigs(case.model).reference.pipeline
            path = folder / f"{case.id}.safetensors"
            written[case.id] = path, write_case(case, pipe, path, seed=len(written) + 1)
        return written[case.id]

    return get


def _case(case_id: str) -> Case:
    return next(case for case in CASES if case.id == case_id)


# ----------------------------------------------------------------------------- accepted files
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_inspect_reports_what_the_file_holds(case_id, files, capsys):
    case = _case(case_id)
    path, _ = files(case)
    info = inspect_lora(path)
    components = [x.component for x in case.layers]
    assert (info.kind, info.layout, info.arch) == (case.kind, case.reported_layout, case.arch)
    assert (info.module_count, info.unet_modules, info.text_encoder_modules,
            info.text_encoder_2_modules) == (len(case.layers), components.count("unet"),
                                             components.count("text_encoder"),
                                             components.count("text_encoder_2"))
    assert info.ranks == sorted({case.rank_of(x) for x in case.layers})
    assert info.alphas == sorted({case.alpha_of(x) for x in case.layers})
    assert info.dtypes == [str(case.dtype).removeprefix("torch.")]

    assert cli_main(["inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(info.to_dict()))
    assert cli_main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"kind:       {case.kind}, {case.reported_layout} layout" in text
    assert f"modules:    {len(case.layers)} (UNet {components.count('unet')}" in text
    assert {"sd1": "SD 1.x", "sdxl": "SDXL", None: "unknown"}[case.arch] in text


def _adapter_updates(pipe, adapter: str) -> dict[tuple[str, str], torch.Tensor]:
    """(component, layer) -> the update the loaded adapter adds there, at its current scale."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for component in ("unet", "text_encoder", "text_encoder_2"):
        model = getattr(pipe, component, None)
        for name, module in model.named_modules() if model is not None else ():
            if isinstance(module, LoraLayer) and adapter in module.lora_A:
                out[component, name] = module.get_delta_weight(adapter).detach().float()
    return out


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_generates_what_the_update_on_the_base_weights_generates(case_id, files, rigs):
    case = _case(case_id)
    path, expected = files(case)
    rig = rigs(case.model)
    report = rig.session.add_lora(path, weight=STRENGTH)
    try:
        # every module matched, none skipped...
        assert (report.matched, report.total, report.unmatched) == (len(case.layers),
                                                                   len(case.layers), [])
        # ...each layer holds exactly strength * alpha/rank * up @ down, and no other layer
        # holds anything...
        got = _adapter_updates(rig.session.pipeline, report.adapter_name)
        assert set(got) == {(x.component, x.path) for x in case.layers}
        for layer, delta in expected.items():
            torch.testing.assert_close(got[layer.component, layer.path], STRENGTH * delta,
                                       rtol=1e-4, atol=1e-6, msg=layer.stem)
        # ...and the image is the one the update applied to the base weights gives.
        image = pixels(rig.session)
    finally:
        rig.session.remove_lora(report.adapter_name)
    assert np.abs(image - rig.base_image).mean() > VISIBLE_MEAN
    reference = rig.reference_image(expected, STRENGTH)
    assert _same_render(image, reference), _diff(image, reference)


def _same_render(a: np.ndarray, b: np.ndarray) -> bool:
    diff = np.abs(a - b)
    return int(diff.max()) <= SAME_MAX and float(diff.mean()) <= SAME_MEAN


def _diff(a: np.ndarray, b: np.ndarray) -> str:
    diff = np.abs(a - b)
    return f"max {int(diff.max())}, mean {float(diff.mean()):.3f}"


def test_the_render_check_catches_a_wrong_alpha_and_a_dropped_text_encoder(files, rigs):
    """The tolerance above is tight enough: alpha read as the rank, or the text-encoder part of
    a LoRA left out, renders visibly differently."""
    rig = rigs("sd1")
    path, expected = files(_case("kohya_rank4_alpha1"))
    alpha_as_rank = {layer: delta * 4.0 for layer, delta in expected.items()}  # alpha 1, rank 4
    assert not _same_render(rig.lora_image(path), rig.reference_image(alpha_as_rank, STRENGTH))

    path, expected = files(_case("kohya_text_encoder"))
    unet_only = {x: d for x, d in expected.items() if x.component == "unet"}
    assert not _same_render(rig.lora_image(path), rig.reference_image(unet_only, STRENGTH))


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_merge_with_another_file_sums_the_updates(case_id, files, tmp_path, capsys):
    case = _case(case_id)
    path, expected = files(case)
    other_path, other_expected = files(OTHER[case.model])
    want: dict[str, torch.Tensor] = {}
    for updates, weight in ((expected, W_FOREIGN), (other_expected, W_OTHER)):
        for layer, delta in updates.items():
            term = weight * delta
            want[layer.canonical] = want[layer.canonical] + term if layer.canonical in want else term

    out = tmp_path / "merged.safetensors"
    assert cli_main(["merge", f"{path}:{W_FOREIGN}", f"{other_path}:{W_OTHER}",
                     "--out", str(out)]) == 0, capsys.readouterr().err
    assert f"Merged {len(want)} modules" in capsys.readouterr().out
    in_memory = merge_loras([(path, W_FOREIGN), (other_path, W_OTHER)]).lora
    for merged in (read_lora(out), in_memory):
        assert set(merged.modules) == set(want)
        for name, target in want.items():
            torch.testing.assert_close(merged.modules[name].delta_weight().reshape(target.shape),
                                       target, rtol=1e-4, atol=1e-6, msg=name)


# ----------------------------------------------------------------------------- refused files
S = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"  # a tiny SD 1.x layer
S_PATH = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
F32_ENTRY = b'{"%s.lora_down.weight": {"dtype": "F32", "shape": %s, "data_offsets": %s}}'


def _plain() -> dict[str, torch.Tensor]:
    return {f"{S}.lora_down.weight": torch.randn(4, 32), f"{S}.lora_up.weight": torch.randn(32, 4),
            f"{S}.alpha": torch.tensor(1.0)}


def _tensors(**extra):
    return lambda path, good: save_file(extra, str(path))


def _with(plain_too: bool = True, drop: tuple[str, ...] = (), **extra):
    def build(path, good):
        tensors = _plain() if plain_too else {}
        for key in drop:
            del tensors[key]
        tensors.update({k.replace("S.", f"{S}.").replace("P.", f"unet.{S_PATH}."): v
                        for k, v in extra.items()})
        save_file(tensors, str(path))
    return build


def _bytes(data: bytes):
    return lambda path, good: path.write_bytes(data)


def _header(header: bytes, claimed: int | None = None, data: bytes = b""):
    length = len(header) if claimed is None else claimed
    return _bytes(struct.pack("<Q", length) + header + data)


def _truncated(path, good):
    data = good.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 5])


def _png(path, good):
    from PIL import Image

    Image.new("RGB", (16, 16), "red").save(path, format="PNG")


def _pickle(path, good):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)


def _nan(path, good):
    tensors = _plain()
    tensors[f"{S}.lora_up.weight"][3, 1] = float("nan")
    save_file(tensors, str(path))


def _unknown_keys(path, good):
    """A good kohya file with two keys added: the message must name those two, not the rest."""
    tensors = load_file(str(good))
    tensors.update({"mystery_tensor": torch.randn(3), f"{S}.lora_scale": torch.tensor(1.0)})
    save_file(tensors, str(path))


# kind -> (how the file is made from a good kohya LoRA, what the message must name).
# LoHa, LoKr, DoRA and full-difference files are not here: the session renders them
# (tests/e2e/test_lycoris_render.py), merge refuses them (tests/core/test_lycoris_kinds.py).
REFUSED = {
    "ia3": (_with(False, **{"S.weight": torch.randn(32), "S.on_input": torch.tensor(False)}),
            ("(IA)³", "plain LoRA/LoCon only")),
    "unknown_keys": (_unknown_keys, ("not LoRA weights", "mystery_tensor", "to_q.lora_scale")),
    "full_checkpoint": (_tensors(**{"model.diffusion_model.out.2.weight": torch.randn(4, 32)}),
                        ("full model checkpoint",)),
    "textual_inversion": (_tensors(emb_params=torch.randn(2, 32)), ("textual-inversion",)),
    "truncated": (_truncated, ("truncated",)),
    "png_renamed": (_png, ("not a safetensors file", "PNG image")),
    "text_renamed": (_bytes(b"This is not a LoRA, just a note about one.\n" * 3),
                     ("not a safetensors file", "text file")),
    "html_error_page": (_bytes(b"<!DOCTYPE html><html><body>Please log in</body></html>"),
                        ("not a safetensors file", "web page")),
    "pickle_checkpoint": (_pickle, ("not a safetensors file", "pickled")),
    "empty": (_bytes(b""), ("empty",)),
    "header_claims_more_than_the_file": (
        _header(F32_ENTRY % (S.encode(), b"[2, 2]", b"[0, 16]"), claimed=5000, data=b"\0" * 16),
        ("truncated", "claims 5000 bytes")),
    "tensor_data_past_the_end": (
        _header(F32_ENTRY % (S.encode(), b"[32, 32]", b"[0, 4096]"), data=b"\0" * 100),
        ("truncated", "claims 4096 bytes")),
    "header_not_json": (_header(b"{this is not json, a damaged header}", data=b"\0" * 16),
                        ("not valid JSON",)),
    "malformed_header_entry": (
        _header(F32_ENTRY % (S.encode(), b"[2, 2]", b"[0, null]"), data=b"\0" * 16),
        ("malformed", "data_offsets")),
    "nan_weights": (_nan, ("NaN",)),
    "half_a_module": (_with(drop=(f"{S}.lora_up.weight",)), ("no lora_up.weight",)),
    "alpha_not_one_number": (_with(drop=(f"{S}.alpha",), **{"S.alpha": torch.ones(4)}),
                             ("alpha", "4 values")),
    "one_layer_twice": (_with(**{
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_down.weight":
            torch.randn(4, 32),
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_up.weight":
            torch.randn(32, 4)}), ("two keys name the same layer", S_PATH)),
}
# what must never reach a person: a raw parser or Python error instead of a message
LEAKS = ("Traceback", "KeyError", "JSONDecodeError", "struct.error", "SafetensorError",
         "RuntimeError", "TypeError", "ValueError", "IndexError", "UnicodeDecodeError",
         "ZeroDivisionError", "AttributeError")


@pytest.fixture(scope="module")
def refused(files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("refused")
    good, _ = files(_case("kohya_rank4_alpha1"))

    def get(kind: str) -> Path:
        path = folder / f"{kind}.safetensors"
        if not path.exists():
            torch.manual_seed(0)
            REFUSED[kind][0](path, good)
        return path

    return get


def _refusal(call, *args) -> str:
    with pytest.raises(LoraFormatError) as info:
        call(*args)
    return str(info.value)


@pytest.mark.parametrize("kind", list(REFUSED))
def test_refused_file_names_the_problem_everywhere(kind, refused, files, tmp_path, capsys):
    path = refused(kind)
    with pytest.raises(LoraFormatError) as info:
        read_lora(path)
    message = str(info.value)
    assert type(info.value) is LoraFormatError and info.value.fix, message  # says what to do
    assert path.name in message
    for fragment in REFUSED[kind][1]:
        assert fragment in message
    assert not any(leak in message for leak in LEAKS), message
    assert _refusal(inspect_lora, path) == message
    good, _ = files(_case("kohya_rank4_alpha1"))
    assert _refusal(merge_loras, [(good, 1.0), (path, 0.5)]) == message

    assert cli_main(["inspect", str(path)]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    out = tmp_path / "merged.safetensors"
    assert cli_main(["merge", str(good), f"{path}:0.5", "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not out.exists()


@pytest.fixture(scope="module")
def busy_session(tiny_model_dir, files, rigs):
    """A session with two LoRAs stacked, and the image it renders."""
    session = GenerationSession(tiny_model_dir)
    session.add_lora(files(_case("kohya_rank4_alpha1"))[0], weight=0.8)
    session.add_lora(files(_case("kohya_locon_conv"))[0], weight=0.5)
    image = pixels(session)
    assert np.abs(image - rigs("sd1").base_image).mean() > VISIBLE_MEAN
    return session, image


@pytest.mark.parametrize("kind", list(REFUSED))
def test_session_that_refused_a_file_keeps_generating_with_its_loras(kind, refused,
                                                                     busy_session):
    session, image = busy_session
    path = refused(kind)
    loras, adapters = session.loras, session.pipeline.get_list_adapters()
    assert _refusal(session.add_lora, path) == _refusal(read_lora, path)
    assert session.loras == loras and session.pipeline.get_list_adapters() == adapters
    assert np.array_equal(pixels(session), image)


def test_session_refuses_a_lora_made_for_another_model_and_keeps_generating(busy_session,
                                                                           files):
    session, image = busy_session
    sdxl_file, _ = files(_case("sdxl_kohya_sgm_names"))
    loras = session.loras
    assert "made for SDXL, this model is SD 1.x" in _refusal(session.add_lora, sdxl_file)
    assert session.loras == loras
    assert np.array_equal(pixels(session), image)
