"""`lora-studio resize`: fixed rank or a share to keep, strength preserved, checked against a
direct SVD of every module's update."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lora_studio.core.errors import LoraFormatError
from lora_studio.core.lora.formats import read_lora, write_lora
from lora_studio.core.lora.model import LoraFile, LoraModule
from lora_studio.core.lora.resize import resize_lora

# module -> (in, out, kernel, how fast its singular values fall)
MODULES = {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": (32, 32, None, 0.2),
           "unet.down_blocks.0.resnets.0.conv1": (16, 32, 3, 0.9),
           "text_encoder.encoder.layers.0.mlp.fc1": (48, 64, None, 0.5)}


@pytest.fixture
def lora_path(tmp_path):
    """Rank 8, alpha 4 (scale 0.5), singular values falling at a different speed per module."""
    g = torch.Generator().manual_seed(0)
    modules = {}
    for name, (fan_in, fan_out, k, decay) in MODULES.items():
        n_in = fan_in * (k * k if k else 1)
        q_up = torch.linalg.qr(torch.randn(fan_out, 8, generator=g))[0]
        q_down = torch.linalg.qr(torch.randn(n_in, 8, generator=g))[0].T
        sigma = torch.tensor([decay ** i for i in range(8)]) * 2.0
        up, down = q_up * sigma, q_down
        if k:
            down, up = down.reshape(8, fan_in, k, k), up[:, :, None, None]
        modules[name] = LoraModule(down.contiguous(), up.contiguous(), alpha=4.0)
    lora = LoraFile(modules=modules, arch="sd1", metadata={
        "modelspec.trigger_phrase": "zqstar", "ss_output_name": "star", "ss_network_dim": "8"})
    return write_lora(lora, tmp_path / "star.safetensors")


def _dense(module: LoraModule) -> torch.Tensor:
    return module.delta_weight().double().flatten(1)


def test_enough_rank_keeps_every_update_exactly(lora_path):
    original = read_lora(lora_path)
    result = resize_lora(lora_path, rank=8)
    assert result.overall_retained == pytest.approx(1.0)
    for name, module in original.modules.items():
        new = result.lora.modules[name]
        assert new.rank == 8 and new.alpha == 8.0  # alpha = rank: strength 1 stays strength 1
        assert torch.allclose(_dense(new), _dense(module), atol=1e-5)
    assert result.lora.metadata["modelspec.trigger_phrase"] == "zqstar"
    assert "Resized by SVD (rank 8)" in result.lora.metadata["ss_training_comment"]


def test_a_smaller_rank_is_the_best_approximation_and_reports_the_share(lora_path):
    original = read_lora(lora_path)
    result = resize_lora(lora_path, rank=2)
    for name, module in original.modules.items():
        dense = _dense(module)
        u, s, vh = torch.linalg.svd(dense, full_matrices=False)
        best = (u[:, :2] * s[:2]) @ vh[:2]
        assert torch.allclose(_dense(result.lora.modules[name]), best, atol=1e-5)
        assert result.retained[name] == pytest.approx(float((s[:2] ** 2).sum() / (s ** 2).sum()),
                                                      abs=1e-6)
    assert result.lora.metadata["ss_network_dim"] == "2"


def test_keep_picks_the_smallest_rank_per_module(lora_path):
    original = read_lora(lora_path)
    result = resize_lora(lora_path, keep=0.95)
    ranks = {}
    for name, module in original.modules.items():
        s2 = torch.linalg.svdvals(_dense(module)) ** 2
        share = torch.cumsum(s2, 0) / s2.sum()
        k = result.lora.modules[name].rank
        ranks[name] = k
        assert share[k - 1] >= 0.95 - 1e-9 and (k == 1 or share[k - 2] < 0.95)
        assert result.retained[name] >= 0.95 - 1e-9
    assert len(set(ranks.values())) > 1  # fast-falling modules need fewer directions
    assert result.lora.metadata["ss_network_dim"] == "Dynamic"


def test_bad_requests_are_refused_and_the_cli_writes_the_file(lora_path, tmp_path):
    with pytest.raises(LoraFormatError, match="rank .* or a share"):
        resize_lora(lora_path)
    with pytest.raises(LoraFormatError, match="share to keep"):
        resize_lora(lora_path, keep=1.5)
    out = tmp_path / "star_r4.safetensors"
    run = subprocess.run([sys.executable, "-m", "lora_studio", "resize", str(lora_path),
                          "--rank", "4", "--out", str(out)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert "rank 4" in run.stdout and "kept" in run.stdout
    assert read_lora(out).ranks == {4}
