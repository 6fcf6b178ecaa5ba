"""Fuse and merge of every LoRA kind render what the session renders (issue 23): a base with a
plain LoRA, LoHa, LoKr, DoRA or full-difference file fused in at a weight renders like the
session holding that file at that weight; a full-rank merge of a mixed stack renders like the
stack; block weights (`:lbw=`) are baked into merge and fuse as the session applies them. Tiny
SD 1.x, 64 px, within 2/255 (tests/lycoris_files.py writes the files).
"""

from __future__ import annotations

import numpy as np
import pytest
from lycoris_files import diff, dora, loha, lokr, plain, te, unet, write_network

from lora_studio.cli import main as cli_main
from lora_studio.core.generate.session import GenerationRequest, GenerationSession
from lora_studio.core.lora.block_weights import BlockWeights

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute")]

REQUEST = GenerationRequest("a red star on a blue background", steps=3, cfg=5.0, seed=11,
                            width=64, height=64, sampler="Euler")
SAME_MAX, SAME_MEAN, VISIBLE_MEAN = 2, 0.1, 3.0
Q0 = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
UP_FF = "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj"
MID_OUT = "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0"
CONV = "down_blocks.0.resnets.0.conv1"
UP_CONV = "up_blocks.1.resnets.1.conv2"
TE = "encoder.layers.0.self_attn.q_proj"
TE_FC = "encoder.layers.1.mlp.fc1"
UP_Q = "up_blocks.1.attentions.1.transformer_blocks.0.attn1.to_q"
MID_CONV = "mid_block.resnets.0.conv1"
FILES = {  # kind -> (weight, targets): each kind on down, mid and up blocks and the text encoder
    "plain": (0.9, (unet(Q0, plain()), unet(UP_CONV, plain(rank=3)), unet(MID_OUT, plain()),
                    te("lora_te_", "text_encoder", TE, plain()))),
    "loha": (1.2, (unet(Q0, loha()), unet(CONV, loha()), unet(UP_FF, loha()),
                   unet("mid_block.resnets.1.conv2", loha(use_tucker=True)), unet(UP_Q, loha()),
                   te("lora_te_", "text_encoder", TE, loha()))),
    "lokr": (-0.6, (unet(Q0, lokr()), unet(UP_CONV, lokr()), unet(MID_OUT, lokr(w2="factored")),
                    unet("conv_in", lokr(w2="factored")),
                    te("lora_te_", "text_encoder", TE_FC, lokr(alpha=None)))),
    "dora": (1.0, (unet(Q0, dora("out")), unet(CONV, dora("in")), unet(UP_FF, dora("out")),
                   unet(MID_CONV, dora("out")), unet(UP_Q, dora("in")),
                   te("lora_te_", "text_encoder", TE, dora("out")))),
    "diff": (1.0, (unet(MID_OUT, diff()), unet(UP_FF, diff()), unet(CONV, diff()),
                   unet(MID_CONV, diff()), unet(UP_Q, diff(with_bias=False)),
                   te("lora_te_", "text_encoder", TE_FC, diff()))),
}
FULL = "10000"  # a merge rank above every module's rank: nothing cut
# BASE 0.5, IN01 0.25, MID -0.5, OUT09 1.5, OUT10 0.75: the blocks the tiny UNet has
BLOCKS = BlockWeights((0.5, 0.25, 1, 1, 1, 1, 1, -0.5, 1, 1, 1, 1, 1, 1, 1.5, 0.75, 1))
MEASURED: dict[str, int] = {}  # case -> max abs pixel difference (printed with -s)


def pixels(session: GenerationSession) -> np.ndarray:
    return np.asarray(session.generate(REQUEST)[0].image, dtype=np.int16)


def assert_same(case: str, a: np.ndarray, b: np.ndarray) -> None:
    diff_ = np.abs(a - b)
    MEASURED[case] = int(diff_.max())
    print(f"\n{case}: max abs pixel difference {MEASURED[case]}, mean {float(diff_.mean()):.3f}")
    assert int(diff_.max()) <= SAME_MAX and float(diff_.mean()) <= SAME_MEAN, case


@pytest.fixture(scope="module")
def session(tiny_model_dir):
    return GenerationSession(tiny_model_dir)


@pytest.fixture(scope="module")
def base_image(session):
    return pixels(session)


@pytest.fixture(scope="module")
def files(session, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuse_kinds")
    paths = {}
    for seed, (kind, (_, targets)) in enumerate(FILES.items(), start=21):
        paths[kind] = folder / f"{kind}.safetensors"
        write_network(paths[kind], targets, session.pipeline, seed=seed)
    return paths


def stack_image(session, files, loras) -> np.ndarray:
    """What the session renders with `loras` [(kind, weight, block weights)] loaded."""
    names = [session.add_lora(files[kind], weight=w, block_weights=bw).adapter_name
             for kind, w, bw in loras]
    try:
        return pixels(session)
    finally:
        for name in names:
            session.remove_lora(name)


def fused_image(model, items) -> np.ndarray:
    from lora_studio.core.lora.fuse import fused_pipeline

    pipe = fused_pipeline(model, items)
    return pixels(GenerationSession.around(pipe, pipe.model_source, dict(pipe.scheduler.config)))


@pytest.mark.parametrize("kind", list(FILES))
def test_a_fused_file_renders_like_the_session_with_it(kind, session, files, base_image,
                                                       tiny_model_dir):
    weight = FILES[kind][0]
    expected = stack_image(session, files, [(kind, weight, None)])
    assert np.abs(expected - base_image).mean() > VISIBLE_MEAN  # the file does something
    assert_same(f"fuse {kind}", fused_image(tiny_model_dir, [(files[kind], weight)]), expected)


def test_a_full_rank_merge_renders_like_the_stack(session, files, tiny_model_dir, tmp_path):
    loras = [(kind, FILES[kind][0], None) for kind in ("plain", "loha", "lokr", "dora")]
    out = tmp_path / "merged.safetensors"
    argv = ["merge", *[f"{files[k]}:{w}" for k, w, _ in loras], "--rank", FULL,
            "--model", str(tiny_model_dir), "--out", str(out)]
    assert cli_main(argv) == 0
    assert_same("merge plain+loha+lokr+dora", stack_image(session, {"m": out}, [("m", 1.0, None)]),
                stack_image(session, files, loras))


def test_block_weights_are_baked_into_merge_and_fuse(session, files, tiny_model_dir, tmp_path):
    loras = [("loha", 0.8, BLOCKS), ("plain", 0.9, BlockWeights.preset_named("OUTALL"))]
    expected = stack_image(session, files, loras)
    plain_stack = stack_image(session, files, [(k, w, None) for k, w, _ in loras])
    assert np.abs(expected - plain_stack).max() > 3 * SAME_MAX  # the block weights show
    specs = [f"{files['loha']}:0.8:lbw={BLOCKS.numbers()}", f"{files['plain']}:0.9:lbw=OUTALL"]
    merged = tmp_path / "merged_lbw.safetensors"
    assert cli_main(["merge", *specs, "--rank", FULL, "--model", str(tiny_model_dir),
                     "--out", str(merged)]) == 0
    assert_same("merge with lbw", stack_image(session, {"m": merged}, [("m", 1.0, None)]),
                expected)
    fused = tmp_path / "fused_lbw"
    assert cli_main(["fuse", "--model", str(tiny_model_dir), *[a for s in specs
                                                               for a in ("--lora", s)],
                     "--out", str(fused)]) == 0
    assert_same("fuse with lbw", pixels(GenerationSession(fused)), expected)
