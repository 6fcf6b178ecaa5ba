"""LyCORIS files in the Mix and `generate` (issue 23): LoHa, LoKr, DoRA and full-difference files
for the tiny SD 1.x and SDXL models render what the base renders with its weights patched by
LyCORIS's formulas (tests/lycoris_files.py, written there independently), within 2/255; they
stack with each other and with plain LoRAs at per-LoRA weights, a slider move re-renders from
memory (no file is read), and block weights scale each block.

As in test_foreign_files: one session takes the files, a second never holds a LoRA and has the
expected updates added to its base weights directly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lycoris_files import (
    STRENGTH,
    Made,
    Target,
    diff,
    dora,
    layer,
    loha,
    lokr,
    patch_base,
    peft_unet,
    restore_base,
    sgm,
    te,
    unet,
    write_network,
)
from safetensors.torch import save_file

from lora_studio.cli import main as cli_main
from lora_studio.core.generate.session import GenerationRequest, GenerationSession
from lora_studio.core.lora.block_weights import BlockWeights

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute")]

REQUEST = GenerationRequest("a red star on a blue background", steps=3, cfg=5.0, seed=11,
                            width=64, height=64, sampler="Euler")
SAME_MAX, SAME_MEAN, VISIBLE_MEAN = 2, 0.1, 3.0
MEASURED: dict[str, int] = {}  # case id -> max abs pixel difference (printed with -s)

_Q = "transformer_blocks.0.attn1.to_q"
SD1_DOWN = "down_blocks.0.attentions.0"
SD1_MID = "mid_block.attentions.0"
SD1_UP = "up_blocks.1.attentions.1"

CASES = {
    "sd1_loha": ("sd1", "kohya", (
        unet(f"{SD1_DOWN}.{_Q}", loha()),
        unet(f"{SD1_DOWN}.proj_in", loha(rank=2, alpha=None)),  # a 1x1 conv, no alpha
        unet(f"{SD1_MID}.transformer_blocks.0.attn1.to_out.0", loha(rank=8, alpha=4.0)),
        unet(f"{SD1_UP}.transformer_blocks.0.ff.net.2", loha()),
        unet("down_blocks.0.resnets.0.conv1", loha()),  # 3x3, kernel in hada_w*_b's columns
        unet("mid_block.resnets.1.conv2", loha(use_tucker=True)),  # 3x3, Tucker t1 / t2
        te("lora_te_", "text_encoder", "encoder.layers.0.self_attn.q_proj", loha()),
        te("lora_te_", "text_encoder", "encoder.layers.1.mlp.fc1", loha()))),
    "sd1_lokr": ("sd1", "kohya", (
        unet(f"{SD1_DOWN}.{_Q}", lokr()),  # both full: scale 1 whatever the alpha
        unet(f"{SD1_DOWN}.transformer_blocks.0.ff.net.0.proj", lokr(w2="factored")),
        unet(f"{SD1_MID}.transformer_blocks.0.attn1.to_out.0",
             lokr(w1="factored", w2="factored", rank=2, alpha=4.0)),
        unet("down_blocks.0.resnets.0.conv1", lokr()),  # a 4-D w2
        unet("mid_block.resnets.1.conv2", lokr(w2="tucker", alpha=2.0)),
        unet("conv_in", lokr(w2="factored")),  # 4 input channels, kernel in w2_b's columns
        te("lora_te_", "text_encoder", "encoder.layers.1.mlp.fc1", lokr(alpha=None)))),
    "sd1_dora": ("sd1", "kohya", (
        unet(f"{SD1_DOWN}.{_Q}", dora("out")),
        unet(f"{SD1_MID}.transformer_blocks.0.attn2.to_q", dora("in", alpha=None)),
        unet(f"{SD1_UP}.proj_in", dora("out")),
        unet("down_blocks.0.resnets.0.conv1", dora("out")),  # LoCon + DoRA on a 3x3 conv
        unet("mid_block.resnets.1.conv2", dora("in")),
        te("lora_te_", "text_encoder", "encoder.layers.0.self_attn.v_proj", dora("out")))),
    "sd1_dora_peft": ("sd1", "peft", (
        peft_unet(f"{SD1_DOWN}.{_Q}", dora("peft", alpha=None)),
        peft_unet(f"{SD1_DOWN}.proj_in", dora("peft", alpha=None)),  # magnitude [1, out, 1, 1]
        peft_unet(f"{SD1_UP}.transformer_blocks.0.ff.net.2", dora("peft", alpha=None)),
        peft_unet(f"{SD1_MID}.transformer_blocks.0.attn1.to_out.0", dora("peft", alpha=None)),
        peft_unet("down_blocks.0.resnets.0.conv1", dora("peft", alpha=None)),
        Target("text_encoder.text_model.encoder.layers.1.self_attn.k_proj", "text_encoder",
               "encoder.layers.1.self_attn.k_proj", dora("peft", alpha=None)))),
    "sd1_diff": ("sd1", "kohya", (
        unet(f"{SD1_DOWN}.{_Q}", diff(with_bias=False)),
        unet(f"{SD1_MID}.transformer_blocks.0.attn1.to_out.0", diff()),
        unet(f"{SD1_UP}.transformer_blocks.0.ff.net.0.proj", diff()),
        unet("down_blocks.0.resnets.0.conv2", diff()),
        te("lora_te_", "text_encoder", "encoder.layers.0.mlp.fc2", diff()))),
    "sdxl_loha": ("sdxl", "kohya", (
        sgm("input_blocks_4_1_transformer_blocks_0_attn1_to_q",
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", loha()),
        sgm("input_blocks_4_1_proj_in", "down_blocks.1.attentions.0.proj_in", loha()),
        sgm("middle_block_1_transformer_blocks_1_attn2_to_v",
            "mid_block.attentions.0.transformer_blocks.1.attn2.to_v", loha()),
        sgm("input_blocks_1_0_in_layers_2", "down_blocks.0.resnets.0.conv1",
            loha(use_tucker=True)),
        te("lora_te1_", "text_encoder", "encoder.layers.0.self_attn.q_proj", loha()),
        te("lora_te2_", "text_encoder_2", "text_model.encoder.layers.1.mlp.fc2", loha()))),
    "sdxl_lokr": ("sdxl", "kohya", (
        sgm("output_blocks_1_1_transformer_blocks_1_ff_net_2",
            "up_blocks.0.attentions.1.transformer_blocks.1.ff.net.2", lokr(w2="factored")),
        sgm("input_blocks_5_1_transformer_blocks_0_attn1_to_k",
            "down_blocks.1.attentions.1.transformer_blocks.0.attn1.to_k", lokr()),
        sgm("middle_block_2_out_layers_3", "mid_block.resnets.1.conv2", lokr(w2="tucker")),
        sgm("input_blocks_4_1_proj_in", "down_blocks.1.attentions.0.proj_in", lokr()),
        sgm("output_blocks_0_1_transformer_blocks_0_ff_net_0_proj",
            "up_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj", lokr(w2="factored")),
        sgm("input_blocks_1_0_in_layers_2", "down_blocks.0.resnets.0.conv1", lokr()),
        te("lora_te1_", "text_encoder", "encoder.layers.1.mlp.fc1", lokr()),
        te("lora_te2_", "text_encoder_2", "text_model.encoder.layers.0.self_attn.v_proj",
           lokr(w1="factored", w2="factored", rank=2, alpha=2.0)))),
    "sdxl_dora": ("sdxl", "kohya", (
        sgm("input_blocks_4_1_transformer_blocks_1_attn2_to_k",
            "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k", dora("out")),
        sgm("output_blocks_0_1_proj_out", "up_blocks.0.attentions.0.proj_out", dora("in")),
        sgm("input_blocks_2_0_out_layers_3", "down_blocks.0.resnets.1.conv2", dora("out")),
        te("lora_te2_", "text_encoder_2", "text_model.encoder.layers.0.self_attn.q_proj",
           dora("out")))),
    "sdxl_diff": ("sdxl", "kohya", (
        sgm("middle_block_1_transformer_blocks_0_ff_net_0_proj",
            "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj", diff()),
        sgm("output_blocks_2_1_transformer_blocks_0_attn1_to_q",
            "up_blocks.0.attentions.2.transformer_blocks.0.attn1.to_q", diff(with_bias=False)),
        sgm("output_blocks_4_0_in_layers_2", "up_blocks.1.resnets.1.conv1", diff()),
        te("lora_te1_", "text_encoder", "encoder.layers.0.self_attn.out_proj", diff()),
        te("lora_te2_", "text_encoder_2", "text_model.encoder.layers.1.mlp.fc1", diff()))),
}
# a plain kohya LoRA (PEFT adapter) sharing a layer with sd1_loha and one with sd1_lokr
PLAIN_SD1 = (f"{SD1_DOWN}.{_Q}", "mid_block.resnets.1.conv2")


def pixels(session: GenerationSession) -> np.ndarray:
    return np.asarray(session.generate(REQUEST)[0].image, dtype=np.int16)


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a - b).max())


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    diff_ = np.abs(a - b)
    assert int(diff_.max()) <= SAME_MAX and float(diff_.mean()) <= SAME_MEAN, \
        f"max {int(diff_.max())}, mean {float(diff_.mean()):.3f}"


class Rig:
    """A tiny model twice: `session` takes the files, `reference` gets patched base weights."""

    def __init__(self, folder) -> None:
        self.session = GenerationSession(folder)
        self.reference = GenerationSession(folder)
        self.base_image = pixels(self.reference)

    def reference_image(self, *updates: tuple[dict[Target, Made], float]) -> np.ndarray:
        pipe = self.reference.pipeline
        saved = []
        try:
            for made, strength in updates:
                saved.append(patch_base(pipe, made, strength))
            return pixels(self.reference)
        finally:
            for original in reversed(saved):
                restore_base(pipe, original)


@pytest.fixture(scope="module")
def rigs(tiny_model_dir, tmp_path_factory):
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
    """case id -> (path, what each target makes), each written once."""
    folder = tmp_path_factory.mktemp("lycoris")
    written: dict = {}

    def get(case_id: str):
        if case_id not in written:
            model, naming, targets = CASES[case_id]
            path = folder / f"{case_id}.safetensors"
            made = write_network(path, targets, rigs(model).reference.pipeline,
                                 seed=len(written) + 1, naming=naming)
            written[case_id] = path, made
        return written[case_id]

    return get


def _plain_lora(path, pipe, seed: int) -> dict[Target, Made]:
    """A plain kohya LoRA (rank 2, alpha 1) on PLAIN_SD1; returns its updates at strength 1."""
    g = torch.Generator().manual_seed(seed)
    tensors, made = {}, {}
    for module_path in PLAIN_SD1:
        target = unet(module_path, None)
        weight = layer(pipe, target).weight.detach()
        out, inp, *kernel = weight.shape
        down = torch.randn(2, inp, *kernel, generator=g) / weight[0].numel() ** 0.5
        up = torch.randn(out, 2, *([1, 1] if kernel else []), generator=g) * float(weight.std())
        tensors.update({f"{target.stem}.lora_down.weight": down,
                        f"{target.stem}.lora_up.weight": up,
                        f"{target.stem}.alpha": torch.tensor(1.0)})
        made[target] = Made({}, 0.5 * (up.flatten(1) @ down.flatten(1)).reshape(weight.shape))
    save_file(tensors, str(path))
    return made


# ----------------------------------------------------------------------------- renders
@pytest.mark.parametrize("case_id", list(CASES))
def test_renders_what_the_patched_base_renders(case_id, files, rigs):
    model, _, targets = CASES[case_id]
    path, made = files(case_id)
    rig = rigs(model)
    report = rig.session.add_lora(path, weight=STRENGTH)
    try:
        assert (report.matched, report.total, report.unmatched) == (len(targets),) * 2 + ([],)
        image = pixels(rig.session)
    finally:
        rig.session.remove_lora(report.adapter_name)
    assert np.abs(image - rig.base_image).mean() > VISIBLE_MEAN  # the file does something
    reference = rig.reference_image((made, STRENGTH))
    MEASURED[case_id] = max_diff(image, reference)
    print(f"\n{case_id}: max abs pixel difference {MEASURED[case_id]}")
    assert_same(image, reference)
    assert np.array_equal(pixels(rig.session), rig.base_image)  # removed: the base again


def test_the_render_check_catches_a_wrong_formula(files, rigs):
    """The tolerance is tight enough: LoHa's scale read as 1 (alpha ignored), a LoKr without its
    alpha / rank, or DoRA's magnitude ignored, renders visibly differently."""
    rig = rigs("sd1")
    for case_id, wrong in (("sd1_loha", lambda t, m: m.delta * 2.0),  # alpha 2, rank 4
                           ("sd1_lokr", lambda t, m: m.delta * 2.0 if "lokr_w2_a" in m.tensors
                            else m.delta),
                           ("sd1_dora", lambda t, m: _plain_part(t, m))):
        path, made = files(case_id)
        report = rig.session.add_lora(path, weight=STRENGTH)
        try:
            image = pixels(rig.session)
        finally:
            rig.session.remove_lora(report.adapter_name)
        broken = {t: Made({}, wrong(t, m), m.bias) for t, m in made.items()}
        assert max_diff(image, rig.reference_image((broken, STRENGTH))) > 3 * SAME_MAX, case_id


def _plain_part(target: Target, made: Made) -> torch.Tensor:
    t = made.tensors
    down, up = t["lora_down.weight"], t["lora_up.weight"]
    alpha = float(t["alpha"]) if "alpha" in t else down.shape[0]
    return (alpha / down.shape[0] * (up.flatten(1) @ down.flatten(1))).reshape(made.delta.shape)


def test_kinds_stack_with_each_other_and_plain_loras_at_their_weights(files, rigs, tmp_path):
    """LoHa, LoKr, DoRA, full-difference and a plain LoRA loaded together, each at its own
    weight (two of them on layers a LyCORIS file also patches: the plain LoRA loaded between
    them, so PEFT wraps a patched layer and a patched layer sits inside PEFT's wrapper)."""
    rig = rigs("sd1")
    session = rig.session
    plain_made = _plain_lora(tmp_path / "plain.safetensors", rig.reference.pipeline, seed=7)
    weights = {"sd1_loha": 0.6, "plain": 0.9, "sd1_lokr": -0.5, "sd1_dora": 0.7,
               "sd1_diff": 0.4}
    names, updates = [], []
    try:
        for case_id, weight in weights.items():
            path, made = ((tmp_path / "plain.safetensors", plain_made) if case_id == "plain"
                          else files(case_id))
            names.append(session.add_lora(path, weight=weight).adapter_name)
            updates.append((made, weight))
        image = pixels(session)
        assert_same(image, rig.reference_image(*updates))
        # a LyCORIS file switched off and another re-weighted: the rest keep their weights
        session.set_enabled(names[0], False)
        session.set_weight(names[2], 0.3)
        image = pixels(session)
        updates = [updates[1], (updates[2][0], 0.3), *updates[3:]]
        assert_same(image, rig.reference_image(*updates))
    finally:
        for name in names:
            session.remove_lora(name)
    assert np.array_equal(pixels(session), rig.base_image)


def test_a_slider_move_renders_from_memory(files, rigs, monkeypatch):
    """After loading, weights and on/off change what renders without reading any file again,
    and switching a LyCORIS file off renders the base exactly."""
    rig = rigs("sd1")
    session = rig.session
    loha_path, loha_made = files("sd1_loha")
    dora_path, dora_made = files("sd1_dora")
    loha_name = session.add_lora(loha_path, weight=STRENGTH).adapter_name
    dora_name = session.add_lora(dora_path, weight=STRENGTH).adapter_name
    try:
        _no_more_reading(monkeypatch)
        for loha_w, dora_w in ((0.3, 1.0), (-0.6, 0.25)):
            session.set_weight(loha_name, loha_w)
            session.set_weight(dora_name, dora_w)
            assert_same(pixels(session), rig.reference_image((loha_made, loha_w),
                                                             (dora_made, dora_w)))
        session.set_enabled(loha_name, False)
        session.set_enabled(dora_name, False)
        assert np.array_equal(pixels(session), rig.base_image)
        session.set_enabled(dora_name, True)  # back on at its weight, still from memory
        assert_same(pixels(session), rig.reference_image((dora_made, 0.25)))
    finally:
        monkeypatch.undo()
        session.remove_lora(loha_name)
        session.remove_lora(dora_name)


def _no_more_reading(monkeypatch) -> None:
    import safetensors
    import safetensors.torch

    from lora_studio.core.lora import lycoris_read, sft

    def refuse(*args, **kwargs):
        raise AssertionError("a file was read after loading")

    for module, name in ((sft, "load_tensors"), (lycoris_read, "load_tensors"),
                         (lycoris_read, "read_network"), (safetensors.torch, "load_file"),
                         (safetensors, "safe_open")):
        monkeypatch.setattr(module, name, refuse)


def test_block_weights_scale_each_block(files, rigs):
    """Block weights on a LoHa file: the text encoder at BASE, the down blocks at their IN
    numbers, the mid block at MID, the up blocks at their OUT numbers (set, then changed)."""
    rig = rigs("sd1")
    path, made = files("sd1_loha")
    ins, mid, outs, base = 0.0, 0.5, 1.5, 0.25
    values = (base,) + (ins,) * 6 + (mid,) + (outs,) * 9
    factor = {"text_encoder": base, "down_blocks": ins, "mid_block": mid, "up_blocks": outs}

    def expected(strength: float, factors: dict) -> dict:
        out = {}
        for target, m in made.items():
            root = target.component if target.component != "unet" else target.path.split(".")[0]
            out[target] = Made({}, m.delta * factors[root], m.bias)
        return out

    name = rig.session.add_lora(path, weight=STRENGTH,
                                block_weights=BlockWeights(values)).adapter_name
    try:
        assert_same(pixels(rig.session), rig.reference_image((expected(STRENGTH, factor),
                                                              STRENGTH)))
        rig.session.set_block_weights(name, BlockWeights.preset_named("INALL"))
        inall = {"text_encoder": 1.0, "down_blocks": 1.0, "mid_block": 0.0, "up_blocks": 0.0}
        assert_same(pixels(rig.session), rig.reference_image((expected(STRENGTH, inall),
                                                              STRENGTH)))
    finally:
        rig.session.remove_lora(name)


# ----------------------------------------------------------------------------- the CLI
def test_generate_command_renders_a_lycoris_file(files, rigs, tiny_model_dir, tmp_path, capsys):
    from PIL import Image

    path, _ = files("sd1_lokr")
    out = tmp_path / "out"
    argv = ["generate", "--model", str(tiny_model_dir), "--lora", f"{path}:{STRENGTH}",
            "--prompt", REQUEST.prompt, "--steps", "3", "--cfg", "5", "--seed", "11",
            "--width", "64", "--height", "64", "--sampler", "Euler", "--out", str(out)]
    assert cli_main(argv) == 0, capsys.readouterr().err
    assert f"{path.name}: 7/7 modules matched" in capsys.readouterr().out
    (png,) = out.glob("*.png")
    image = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    rig = rigs("sd1")
    name = rig.session.add_lora(path, weight=STRENGTH).adapter_name
    try:
        assert np.array_equal(image, pixels(rig.session))
    finally:
        rig.session.remove_lora(name)
    assert np.abs(image - rig.base_image).mean() > VISIBLE_MEAN
