"""Training metadata, hashes A1111 shows, and `inspect` (Python and CLI)."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys

import pytest
import torch

from lora_studio.core.errors import LoraFormatError
from lora_studio.core.lora.formats import read_lora, write_lora
from lora_studio.core.lora.hashing import short_hash, sshs_model_hash
from lora_studio.core.lora.inspect import format_inspection, inspect_lora
from lora_studio.core.lora.metadata import build_training_metadata
from lora_studio.core.lora.model import LoraFile, LoraModule

REQUIRED = [
    "ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_base_model_version",
    "ss_output_name", "ss_sd_model_name", "ss_resolution", "ss_num_train_images",
    "ss_tag_frequency", "ss_dataset_dirs", "ss_learning_rate", "ss_unet_lr", "ss_text_encoder_lr",
    "ss_optimizer", "ss_lr_scheduler", "ss_epoch", "ss_steps", "ss_num_epochs", "ss_seed",
    "ss_noise_offset", "ss_min_snr_gamma", "ss_mixed_precision", "ss_training_started_at",
    "ss_training_finished_at", "ss_training_comment", "modelspec.sai_model_spec",
    "modelspec.architecture", "modelspec.implementation", "modelspec.title",
    "modelspec.resolution", "modelspec.date", "modelspec.trigger_phrase",
    "modelspec.prediction_type",
]


def _metadata(**overrides) -> dict[str, str]:
    args = dict(
        network_dim=4, network_alpha=2, base_model_version="sd_v1", base_model_name="tiny-sd",
        resolution=512, steps=300, epochs=3, learning_rate=1e-4, unet_lr=1e-4,
        text_encoder_lr=5e-5, optimizer="AdamW", lr_scheduler="cosine", seed=42,
        num_train_images=12, tag_frequency={"img/10_star": {"sks star": 12, "blue": 5}},
        dataset_dirs=["img/10_star"], noise_offset=0.05, min_snr_gamma=5.0,
        mixed_precision="bf16", training_started_at=1700000000.0,
        training_finished_at=1700003600.0, title="Sks Star", trigger_phrase="sks star",
        comment="test run",
    )
    args.update(overrides)
    return build_training_metadata(**args)


@pytest.fixture()
def lora_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    modules = {
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q":
            LoraModule(torch.randn(4, 32, generator=g), torch.randn(32, 4, generator=g), 2.0),
        "unet.down_blocks.0.resnets.0.conv1":
            LoraModule(torch.randn(4, 32, 3, 3, generator=g), torch.randn(32, 4, 1, 1, generator=g), 1.0),
        "text_encoder.encoder.layers.0.mlp.fc1":
            LoraModule(torch.randn(8, 32, generator=g), torch.randn(64, 8, generator=g), 8.0),
    }
    lora = LoraFile(modules, metadata=_metadata())
    return write_lora(lora, tmp_path / "sks_star.safetensors")


def test_training_metadata_has_the_keys_other_tools_read():
    meta = _metadata()
    assert all(isinstance(v, str) for v in meta.values())
    assert [k for k in REQUIRED if k not in meta] == []
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"
    assert meta["ss_resolution"] == "(512, 512)" and meta["modelspec.resolution"] == "512x512"
    assert json.loads(meta["ss_tag_frequency"]) == {"img/10_star": {"sks star": 12, "blue": 5}}
    assert meta["modelspec.sai_model_spec"] == "1.0.0"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.date"] == "2023-11-14T23:13:20+00:00"
    xl = _metadata(base_model_version="sdxl_base_v1-0", resolution=(1024, 768))
    assert xl["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert xl["modelspec.resolution"] == "1024x768"
    assert _metadata(base_model_version="sd_v2_v")["modelspec.prediction_type"] == "v"
    with pytest.raises(ValueError, match="base_model_version"):
        _metadata(base_model_version="sd3")


def test_saved_hash_is_sha256_of_the_tensor_data(lora_file):
    data = lora_file.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    expected = hashlib.sha256(data[8 + header_len:]).hexdigest()
    header = json.loads(data[8 : 8 + header_len])
    assert header["__metadata__"]["sshs_model_hash"] == expected
    assert sshs_model_hash(lora_file) == expected == sshs_model_hash(data)
    assert short_hash(lora_file) == expected[:12]
    assert len(header["__metadata__"]["sshs_legacy_hash"]) == 8
    # The metadata the file was saved with is all there, as strings, and reads back.
    assert read_lora(lora_file).metadata["ss_output_name"] == "Sks Star"


def test_hash_does_not_depend_on_metadata(lora_file, tmp_path):
    lora = read_lora(lora_file)
    lora.metadata["modelspec.title"] = "Renamed"
    other = write_lora(lora, tmp_path / "renamed.safetensors")
    assert sshs_model_hash(other) == sshs_model_hash(lora_file)
    lora.modules["text_encoder.encoder.layers.0.mlp.fc1"].up.add_(1.0)
    changed = write_lora(lora, tmp_path / "changed.safetensors")
    assert sshs_model_hash(changed) != sshs_model_hash(lora_file)


def test_inspect_summarizes_the_file(lora_file):
    info = inspect_lora(lora_file)
    assert (info.layout, info.arch, info.kind) == ("kohya", "sd1", "LoCon")
    assert (info.module_count, info.unet_modules, info.text_encoder_modules) == (3, 2, 1)
    assert info.ranks == [4, 8] and info.alphas == [1.0, 2.0, 8.0]
    assert info.dtypes == ["float32"] and info.file_size == lora_file.stat().st_size
    assert info.short_hash == short_hash(lora_file)
    assert info.top_tags[0] == ("sks star", 12)
    text = format_inspection(info)
    assert "sks_star.safetensors" in text and "SD 1.x" in text and "rank:       4, 8" in text
    json.dumps(info.to_dict())


def test_inspect_cli_prints_json(lora_file):
    result = subprocess.run([sys.executable, "-m", "lora_studio", "inspect", str(lora_file), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["module_count"] == 3 and data["alphas"] == [1.0, 2.0, 8.0]
    assert data["metadata"]["ss_output_name"] == "Sks Star"


def test_inspect_cli_explains_a_refused_file(tmp_path):
    path = tmp_path / "loha.safetensors"
    from safetensors.torch import save_file

    save_file({"lora_unet_a.hada_w1_a": torch.zeros(1)}, str(path))
    with pytest.raises(LoraFormatError):
        inspect_lora(path)
    result = subprocess.run([sys.executable, "-m", "lora_studio", "inspect", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "LoHa" in result.stderr and "Traceback" not in result.stderr
