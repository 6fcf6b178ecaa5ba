"""Merging LoRA files of every kind into one plain LoRA (issue 23): LoHa, LoKr, DoRA,
full-difference and plain LoRA files, written key by key as LyCORIS / kohya write them on the tiny
SD 1.x model (tests/lycoris_files.py, with the update of each module from the reference formulas
there). At full rank the merge holds sum_i w_i dW_i exactly (float tolerance) per module; at a
lower rank the kept shares it reports are the energy ratios measured on the file; block weights
scale each module by its block's number; what cannot be merged (LyCORIS without a rank, DoRA
without the model) is refused with exit 2 and what to do. Renders: tests/e2e/test_fuse_kinds.py.
"""

from __future__ import annotations

import pytest
import torch
from lycoris_files import diff, dora, loha, lokr, plain, te, unet, write_network

from lora_studio.cli import main as cli_main
from lora_studio.core.lora.block_weights import BlockWeights
from lora_studio.core.lora.formats import read_lora
from lora_studio.core.lora.merge import merge_loras

pytestmark = pytest.mark.usefixtures("one_torch_thread")

Q0 = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"  # 32 -> 32
FF = "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj"  # 32 -> 256
PROJ = "up_blocks.1.attentions.1.proj_in"  # 1x1 conv
CONV = "down_blocks.0.resnets.0.conv1"  # 3x3 conv 32 -> 32
TUCKER = "mid_block.resnets.1.conv2"  # 3x3 conv 64 -> 64
DEEP = "down_blocks.1.resnets.0.conv1"  # 3x3 conv in a level without attention
TE = "encoder.layers.0.self_attn.q_proj"
FILES = {
    "loha": (unet(Q0, loha()), unet(CONV, loha()),  # the 3x3 kernel flattened in hada_w*_b
             unet(TUCKER, loha(use_tucker=True)), unet(DEEP, loha(rank=2)),
             te("lora_te_", "text_encoder", TE, loha())),
    "lokr": (unet(Q0, lokr()), unet(CONV, lokr()),  # a 4-D w2
             unet("conv_in", lokr(w2="factored")), unet(PROJ, lokr(w1="factored", w2="factored"))),
    "plain": (unet(Q0, plain()), unet(CONV, plain(rank=3, alpha=2.0)), unet(FF, plain()),
              te("lora_te_", "text_encoder", TE, plain(rank=4, alpha=None))),
    "dora": (unet(Q0, dora("out")), unet(CONV, dora("out")),
             te("lora_te_", "text_encoder", TE, dora("in"))),
    "diff": (unet(Q0, diff(with_bias=False)), unet(FF, diff())),
}
WEIGHTS = {"loha": 0.8, "lokr": -0.6, "plain": 0.5}
FULL = 10_000  # more than any module's rank: nothing is cut
# 17 numbers (BASE, IN01, IN02, IN04 ... OUT11); 9 where no layer of the tiny UNet is
BW = BlockWeights((0.5, 0.25, 9, 9, 9, 9, 9, -0.5, 9, 9, 9, 9, 9, 9, 1.5, 0.75, 9))
# each module's number on the tiny UNet (levels 0 / 1, one layer each, attention in down level 0
# and up level 1): down level 0 is IN01, up level 1 is OUT09 OUT10, the rest outside the blocks
FACTOR = {f"unet.{Q0}": 0.25, f"unet.{CONV}": 0.25, f"unet.{TUCKER}": -0.5, f"unet.{DEEP}": 1.0,
          f"unet.{FF}": 1.5, f"unet.{PROJ}": 0.75, "unet.conv_in": 1.0, f"text_encoder.{TE}": 0.5}


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    from lora_studio.core.models.loading import load_pipeline

    return load_pipeline(tiny_model_dir)


@pytest.fixture(scope="module")
def files(pipe, tmp_path_factory):
    """kind -> (path, {Target: Made}) for the FILES above."""
    folder = tmp_path_factory.mktemp("kinds")
    out = {}
    for seed, (kind, targets) in enumerate(FILES.items(), start=1):
        path = folder / f"{kind}.safetensors"
        out[kind] = path, write_network(path, targets, pipe, seed=seed)
    return out


def expected(files, weights: dict[str, float], blocks: dict[str, BlockWeights] | None = None):
    """canonical module -> sum of w * (block number) * dW over the files, 2-D [out, in*k*k]."""
    out: dict[str, torch.Tensor] = {}
    for kind, weight in weights.items():
        for target, made in files[kind][1].items():
            name = f"{target.component}.{target.path}"
            factor = FACTOR[name] if kind in (blocks or {}) else 1.0
            term = weight * factor * made.delta.flatten(1)
            out[name] = out[name] + term if name in out else term
    return out


def dense(module) -> torch.Tensor:
    return module.delta_weight().flatten(1)


def assert_holds(lora, wanted: dict[str, torch.Tensor]) -> None:
    assert set(lora.modules) == set(wanted)
    for name, target in wanted.items():
        error = float((dense(lora.modules[name]) - target).abs().max())
        assert error <= 1e-5 * float(target.abs().max()), f"{name}: max error {error}"


def test_full_rank_merge_of_loha_lokr_and_plain_holds_the_weighted_sum(files):
    result = merge_loras([(files[k][0], w) for k, w in WEIGHTS.items()], rank=FULL)
    assert_holds(result.lora, expected(files, WEIGHTS))
    modules = result.lora.modules
    # conv modules come out as LoCon with their kernels: the flattened LoHa one too
    assert modules[f"unet.{CONV}"].down.shape[1:] == (32, 3, 3)
    assert modules["unet.conv_in"].down.shape[1:] == (4, 3, 3)
    assert modules[f"unet.{DEEP}"].down.shape[1:] == (32, 3, 3)
    assert modules[f"unet.{PROJ}"].down.shape[1] == 32  # a 1x1 conv: 2-D like its LoKr update
    assert all(m.alpha == m.rank for m in modules.values())
    assert result.overall_retained == pytest.approx(1.0, abs=1e-9)
    assert result.input_retained == pytest.approx([1.0] * 3, abs=1e-9)
    assert result.lora.metadata["modelspec.merged_from"] == \
        "loha.safetensors:0.8, lokr.safetensors:-0.6, plain.safetensors:0.5"


def test_kept_shares_at_a_low_rank_are_the_energy_ratios(files):
    result = merge_loras([(files[k][0], w) for k, w in WEIGHTS.items()], rank=2)
    wanted = expected(files, WEIGHTS)
    kept = total = 0.0
    for name, target in wanted.items():
        module = result.lora.modules[name]
        assert module.rank <= 2
        merged_energy = float((dense(module).double() ** 2).sum())
        energy = float((target.double() ** 2).sum())
        assert result.retained[name] == pytest.approx(merged_energy / energy, rel=1e-5)
        kept, total = kept + merged_energy, total + energy
    assert result.overall_retained == pytest.approx(kept / total, rel=1e-5)
    assert result.overall_retained < 0.9  # rank 2 does cut these updates
    # per file: the share of its own update in the kept output directions of each module
    for index, (kind, weight) in enumerate(WEIGHTS.items()):
        inside = whole = 0.0
        for target, made in files[kind][1].items():
            name = f"{target.component}.{target.path}"
            basis, _ = torch.linalg.qr(result.lora.modules[name].up.double().flatten(1))
            term = weight * made.delta.flatten(1).double()
            inside += float(((basis.T @ term) ** 2).sum())
            whole += float((term**2).sum())
        assert result.input_retained[index] == pytest.approx(inside / whole, rel=1e-5), kind


def test_block_weights_scale_each_module_by_its_block(files, tiny_model_dir):
    blocks = {"loha": BW, "plain": BW}
    items = [(files[k][0], w, blocks.get(k)) for k, w in WEIGHTS.items()]
    result = merge_loras(items, rank=FULL, model=tiny_model_dir)
    assert_holds(result.lora, expected(files, WEIGHTS, blocks))
    assert "loha.safetensors:0.8:lbw=0.5,0.25,9," in result.lora.metadata["modelspec.merged_from"]
    # plain LoRAs with block weights still merge exactly, ranks concatenated (no SVD)
    exact = merge_loras([(files["plain"][0], 0.5, BW)], model=tiny_model_dir)
    assert exact.retained is None
    assert_holds(exact.lora, expected(files, {"plain": 0.5}, {"plain": BW}))


def test_dora_merge_needs_the_model_and_then_holds_its_update(files, tiny_model_dir, tmp_path,
                                                              capsys):
    out = tmp_path / "dora_merge.safetensors"
    argv = ["merge", f"{files['dora'][0]}:0.7", f"{files['loha'][0]}:0.8", "--rank", str(FULL),
            "--out", str(out)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dora.safetensors holds DoRA modules"), err
    assert "--model MODEL" in err and "Traceback" not in err
    assert not out.exists()
    assert cli_main(argv + ["--model", str(tiny_model_dir)]) == 0, capsys.readouterr().err
    assert_holds(read_lora(out), expected(files, {"dora": 0.7, "loha": 0.8}))


def test_lycoris_merge_without_a_rank_is_refused_and_with_one_reports_kept_shares(
        files, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    plain_file, loha_file = files["plain"][0], files["loha"][0]
    assert cli_main(["merge", f"{plain_file}:0.5", f"{loha_file}:0.8", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "loha.safetensors is a LyCORIS LoHa file" in err and "--rank" in err, err
    assert not out.exists()
    assert cli_main(["merge", f"{plain_file}:0.5", f"{loha_file}:0.8", "--rank", "2",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "loha.safetensors: weight 0.8, 5 modules, kept " in printed
    assert "% of the update (share of squared Frobenius norm)" in printed
    assert read_lora(out).ranks <= {1, 2}


def test_bias_updates_are_said_to_be_left_out(files):
    result = merge_loras([(files["diff"][0], 1.0)], rank=FULL)
    assert_holds(result.lora, expected(files, {"diff": 1.0}))
    assert len(result.notes) == 1 and "diff.safetensors" in result.notes[0]
    assert "bias updates (diff_b) of 1 module(s) are left out" in result.notes[0]


def test_resize_makes_a_plain_lora_of_a_lycoris_file(files, tmp_path, capsys):
    out = tmp_path / "loha_plain.safetensors"
    assert cli_main(["resize", str(files["lokr"][0]), "--rank", "64", "--out", str(out)]) == 0
    assert "kept 100.00% of the update" in capsys.readouterr().out
    resized = read_lora(out)  # a plain LoRA file now (read_lora refuses LyCORIS kinds)
    assert resized.metadata["ss_network_module"] == "networks.lora"
    assert_holds(resized, expected(files, {"lokr": 1.0}))
