"""Merging LoRAs: the exact merge reproduces every module's weighted update (in memory, and after
a kohya or diffusers round trip), the SVD re-rank reports the right retained share, mismatched
architectures are refused, the CLI works, and the merged file renders what the inputs render
loaded together."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

from lora_studio.cli import parse_weighted_path
from lora_studio.core.errors import LoraFormatError
from lora_studio.core.lora.formats import lora_from_peft, read_lora, write_lora
from lora_studio.core.lora.merge import merge_loras
from lora_studio.core.lora.model import LoraFile, LoraModule
from lora_studio.core.lora.testing import attach_random_adapters
from tiny_pipeline import render, tiny_pipe

Q = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"  # linear 32 -> 32
K = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"  # linear 48 -> 32
PROJ = "unet.down_blocks.0.attentions.0.proj_in"  # 1x1 conv 32 -> 32
CONV = "unet.down_blocks.0.resnets.0.conv1"  # LoCon 3x3 conv 32 -> 64
TE_Q = "text_encoder.encoder.layers.0.self_attn.q_proj"  # linear 48 -> 48
ONLY_A = "unet.mid_block.attentions.0.transformer_blocks.0.ff.net.2"  # linear 128 -> 32
ONLY_B = "text_encoder.encoder.layers.0.mlp.fc1"  # linear 48 -> 192
SHAPES = {Q: (32, 32, None), K: (48, 32, None), PROJ: (32, 32, 1), CONV: (32, 64, 3),
          TE_Q: (48, 48, None), ONLY_A: (128, 32, None), ONLY_B: (48, 192, None)}
W_A, W_B = 0.8, -0.6
TOL = 1e-5


def _module(g, fan_in, fan_out, kernel, rank, alpha, dtype) -> LoraModule:
    if kernel is None:
        down = torch.randn(rank, fan_in, generator=g) * 0.3
        up = torch.randn(fan_out, rank, generator=g) * 0.3
    else:
        down = torch.randn(rank, fan_in, kernel, kernel, generator=g) * 0.3
        up = torch.randn(fan_out, rank, 1, 1, generator=g) * 0.3
    return LoraModule(down=down.to(dtype), up=up.to(dtype), alpha=alpha)


def _make(names, *, rank, alpha, dtype, seed, title) -> LoraFile:
    g = torch.Generator().manual_seed(seed)
    modules = {n: _module(g, *SHAPES[n], rank, alpha, dtype) for n in names}
    return LoraFile(modules=modules, arch="sd1",
                    metadata={"ss_base_model_version": "sd_v1", "ss_output_name": title})


@pytest.fixture(scope="module")
def inputs():
    """A: rank 4, alpha 1, float32; B: rank 8, alpha 8, float16; each has one module of its own."""
    shared = [Q, K, PROJ, CONV, TE_Q]
    a = _make(shared + [ONLY_A], rank=4, alpha=1.0, dtype=torch.float32, seed=1, title="style")
    b = _make(shared + [ONLY_B], rank=8, alpha=8.0, dtype=torch.float16, seed=2, title="char")
    return a, b


def _dense(module: LoraModule) -> torch.Tensor:
    """up @ down * alpha / r, conv kernels flattened, float32."""
    return (module.up.float().flatten(1) @ module.down.float().flatten(1)) * (
        module.alpha / module.rank)


def _expected(loras_and_weights) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for lora, weight in loras_and_weights:
        for name, module in lora.modules.items():
            term = weight * _dense(module)
            out[name] = out[name] + term if name in out else term
    return out


def _assert_updates(lora: LoraFile, expected: dict[str, torch.Tensor], tol: float = TOL) -> None:
    assert set(lora.modules) == set(expected)
    for name, target in expected.items():
        got = _dense(lora.modules[name])
        err = float((got - target).abs().max())
        assert err <= tol, f"{name}: max error {err}"


def test_exact_merge_reproduces_every_module(inputs):
    a, b = inputs
    result = merge_loras([(a, W_A), (b, W_B)])
    merged = result.lora
    _assert_updates(merged, _expected([(a, W_A), (b, W_B)]))
    assert result.retained is None and result.overall_retained is None
    # ranks concatenated, alpha = rank (scale 1); one-input modules keep their own rank
    assert merged.modules[Q].rank == 12 and merged.modules[ONLY_A].rank == 4
    assert merged.modules[ONLY_B].rank == 8
    assert all(m.alpha == m.rank for m in merged.modules.values())
    conv = merged.modules[CONV]
    assert conv.down.shape == (12, 32, 3, 3) and conv.up.shape == (64, 12, 1, 1)
    assert merged.modules[PROJ].down.shape == (12, 32, 1, 1)
    assert merged.arch == "sd1"
    # mixed float32 / float16 inputs -> float32 output
    assert {t.dtype for m in merged.modules.values() for t in (m.down, m.up)} == {torch.float32}


def test_common_dtype_is_kept(inputs):
    _, b = inputs
    merged = merge_loras([(b, 1.0), (b, 0.5)]).lora
    assert {t.dtype for m in merged.modules.values() for t in (m.down, m.up)} == {torch.float16}


@pytest.mark.parametrize("layout", ["kohya", "diffusers"])
def test_merge_survives_a_round_trip(inputs, tmp_path, layout):
    a, b = inputs
    path = write_lora(merge_loras([(a, W_A), (b, W_B)]).lora, tmp_path / "m.safetensors",
                      layout=layout)
    back = read_lora(path)
    assert back.layout == layout and back.arch == "sd1"
    _assert_updates(back, _expected([(a, W_A), (b, W_B)]))


def test_merge_of_files_by_path(inputs, tmp_path):
    a, b = inputs
    pa = write_lora(a, tmp_path / "style.safetensors")
    pb = write_lora(b, tmp_path / "char.safetensors", layout="diffusers")
    result = merge_loras([(pa, W_A), (str(pb), W_B)])
    _assert_updates(result.lora, _expected([(a, W_A), (b, W_B)]))
    meta = result.lora.metadata
    assert meta["modelspec.merged_from"] == "style.safetensors:0.8, char.safetensors:-0.6"
    assert meta["ss_base_model_version"] == "sd_v1"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["ss_network_dim"] == "Dynamic" and meta["ss_network_alpha"] == "Dynamic"
    assert meta["modelspec.title"] == "merge of style + char"


def test_uniform_rank_is_reported_as_numbers(inputs):
    a, _ = inputs
    meta = merge_loras([(a, 1.0), (a, 1.0)]).lora.metadata
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("8", "8.0")


def _sigma_share(target: torch.Tensor, k: int) -> tuple[float, float]:
    sigma = torch.linalg.svd(target.double(), full_matrices=False).S
    return float((sigma[:k] ** 2).sum()), float((sigma**2).sum())


def test_rerank_with_enough_rank_reproduces_the_update(inputs):
    a, b = inputs
    result = merge_loras([(a, W_A), (b, W_B)], rank=12)
    _assert_updates(result.lora, _expected([(a, W_A), (b, W_B)]))
    assert all(abs(share - 1.0) <= 1e-6 for share in result.retained.values())
    assert abs(result.overall_retained - 1.0) <= 1e-6
    assert all(m.alpha == m.rank for m in result.lora.modules.values())


def test_rerank_to_a_small_rank_reports_the_sigma_squared_share(inputs):
    a, b = inputs
    k = 3
    result = merge_loras([(a, W_A), (b, W_B)], rank=k)
    expected = _expected([(a, W_A), (b, W_B)])
    kept_all = total_all = 0.0
    for name, target in expected.items():
        module = result.lora.modules[name]
        assert module.rank == k and module.alpha == k
        kept, total = _sigma_share(target, k)
        kept_all, total_all = kept_all + kept, total_all + total
        assert result.retained[name] < 1.0
        assert abs(result.retained[name] - kept / total) <= 1e-6, name
        # the kept part is the best rank-k approximation: its error is the dropped sigma energy
        residual = float(((_dense(module) - target).double() ** 2).sum())
        assert abs(residual - (total - kept)) <= 1e-4 * total, name
    assert abs(result.overall_retained - kept_all / total_all) <= 1e-6
    assert result.worst_modules(2)[0][1] == min(result.retained.values())
    if CONV in result.lora.modules:
        assert result.lora.modules[CONV].down.shape == (k, 32, 3, 3)


def test_architecture_mismatch_is_refused(inputs):
    a, _ = inputs
    sdxl = LoraFile(modules=dict(a.modules), arch="sdxl")
    with pytest.raises(LoraFormatError, match="different architectures.*SD 1.x.*SDXL"):
        merge_loras([(a, 1.0), (sdxl, 1.0)])


def test_shape_mismatch_is_refused(inputs):
    a, _ = inputs
    g = torch.Generator().manual_seed(5)
    other = LoraFile(modules={Q: _module(g, 64, 32, None, 4, 4.0, torch.float32)}, arch="sd1")
    with pytest.raises(LoraFormatError, match="different shapes"):
        merge_loras([(a, 1.0), (other, 1.0)])


def test_weighted_path_parsing_accepts_windows_paths():
    assert parse_weighted_path("a.safetensors") == ("a.safetensors", 1.0)
    assert parse_weighted_path("a.safetensors:0.8") == ("a.safetensors", 0.8)
    assert parse_weighted_path(r"C:\loras\a.safetensors") == (r"C:\loras\a.safetensors", 1.0)
    assert parse_weighted_path(r"C:\loras\a.safetensors:-0.5") == (r"C:\loras\a.safetensors", -0.5)


def _cli(*args) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lora_studio", "merge", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_cli_merges_two_files(inputs, tmp_path):
    a, b = inputs
    pa = write_lora(a, tmp_path / "style.safetensors")
    pb = write_lora(b, tmp_path / "char.safetensors")
    out = tmp_path / "merged.safetensors"
    run = _cli(f"{pa}:0.8", f"{pb}:-0.6", "--out", out)
    assert run.returncode == 0, run.stderr
    assert "style.safetensors: weight 0.8, 6 modules" in run.stdout
    assert "char.safetensors: weight -0.6, 6 modules" in run.stdout
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["modelspec.merged_from"] == "style.safetensors:0.8, char.safetensors:-0.6"
    _assert_updates(read_lora(out), _expected([(a, W_A), (b, W_B)]))

    reranked = tmp_path / "merged-r2.safetensors"
    run = _cli(pa, f"{pb}:0.5", "--out", reranked, "--rank", "2", "--format", "diffusers")
    assert run.returncode == 0, run.stderr
    assert "Retained" in run.stdout and "Least retained modules:" in run.stdout
    assert read_lora(reranked).ranks == {2}

    run = _cli(f"{pa}:1", tmp_path / "missing.safetensors", "--out", tmp_path / "x.safetensors")
    assert run.returncode == 2 and "missing.safetensors" in run.stderr


# ----------------------------------------------------------------------------- image


def test_merged_file_renders_like_both_adapters(tiny_model_dir, tmp_path):
    """Realistic inputs (peft adapters on the tiny model): A r=4 alpha=2 (UNet + text encoder),
    B r=8 alpha=1 (UNet only). The merged kohya file at weight 1.0, loaded by plain diffusers,
    renders what A and B render as two adapters at 0.8 / 0.6."""
    from lora_studio.core.lora.apply import load_lora_into_pipeline

    donor = tiny_pipe(tiny_model_dir)
    attach_random_adapters(donor, rank=4, alpha=2.0, seed=0, adapter_name="a")
    attach_random_adapters(donor, rank=8, alpha=1.0, seed=1, adapter_name="b",
                           text_encoder=False)
    a = lora_from_peft(donor.unet, donor.text_encoder, adapter_name="a")
    b = lora_from_peft(donor.unet, adapter_name="b")
    pa, pb = write_lora(a, tmp_path / "a.safetensors"), write_lora(b, tmp_path / "b.safetensors")

    both = tiny_pipe(tiny_model_dir)
    base = render(both)
    load_lora_into_pipeline(both, pa, "a")
    load_lora_into_pipeline(both, pb, "b")
    both.set_adapters(["a", "b"], [0.8, 0.6])
    reference = render(both)
    assert np.abs(reference - base).mean() > 0.01  # the LoRAs change the image clearly

    merged_path = write_lora(merge_loras([(pa, 0.8), (pb, 0.6)]).lora,
                             tmp_path / "merged.safetensors")
    pipe = tiny_pipe(tiny_model_dir)
    pipe.load_lora_weights(str(merged_path), adapter_name="merged")
    image = render(pipe)
    assert float(np.abs(image - reference).max()) < 1e-4
