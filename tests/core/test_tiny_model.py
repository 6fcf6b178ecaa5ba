from __future__ import annotations

import subprocess
from pathlib import Path
import sys

import pytest
from safetensors.torch import load_file


def _unet_weights(model_dir):
    return load_file(str(model_dir / "unet" / "diffusion_pytorch_model.safetensors"))


def test_make_tiny_model_cli_is_deterministic_and_loads_in_plain_diffusers(tmp_path):
    from lora_studio.core.models.tiny import make_tiny_model

    subprocess.run([sys.executable, "-m", "lora_studio", "make-tiny-model",
                    str(tmp_path / "a"), "--seed", "3"], check=True)
    for name, seed in (("b", 3), ("c", 4)):  # what the command runs, without two more starts
        make_tiny_model(tmp_path / name, seed=seed)
    a, b, c = (_unet_weights(tmp_path / n) for n in "abc")
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)
    assert any((a[k] != c[k]).any() for k in a if a[k].numel() > 1)

    # plain diffusers, in a fresh process with the hub switched off
    code = (
        "import torch; from diffusers import StableDiffusionPipeline;"
        f"p = StableDiffusionPipeline.from_pretrained(r'{tmp_path / 'a'}');"
        "assert p.unet.config.cross_attention_dim == p.text_encoder.config.hidden_size;"
        "assert any('attn2' in n for n, _ in p.unet.named_modules());"
        "im = p('a cat', num_inference_steps=2, height=64, width=64).images[0];"
        "print(im.size)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert "(64, 64)" in out.stdout


def test_the_builtin_model_is_the_shipped_tiny_shapes(monkeypatch, tmp_path):
    from lora_studio.core.models import tiny

    monkeypatch.setenv("LORA_STUDIO_HOME", str(tmp_path / "home"))
    assert tiny.builtin_tiny_model_dir() == tiny.shipped_tiny_shapes_dir()
    assert not (tmp_path / "home").exists()  # nothing is made: it ships ready


def test_a_random_tiny_model_stands_in_when_the_shipped_one_is_missing(monkeypatch, tmp_path):
    from lora_studio.core.models import tiny

    monkeypatch.setenv("LORA_STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(tiny, "shipped_tiny_shapes_dir", lambda: tmp_path / "missing")
    first = tiny.builtin_tiny_model_dir()
    assert first == tmp_path / "home" / "models" / "tiny-sd"
    assert (first / "model_index.json").is_file()
    stamp = (first / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert tiny.builtin_tiny_model_dir() == first  # made once, then reused
    assert (first / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_tiny_model_prediction_type_is_saved(tmp_path, prediction):
    from lora_studio.core.models.tiny import make_tiny_model

    import json

    out = make_tiny_model(tmp_path / "m", prediction_type=prediction, arch="sd2")
    config = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert config["prediction_type"] == prediction


def test_save_pipeline_folder_takes_a_string_path_and_replaces_the_old_model(tmp_path):
    from lora_studio.core.models.tiny import save_pipeline_folder

    class Pipe:  # what save_pipeline_folder needs of a pipeline
        def __init__(self, text: str) -> None:
            self.text = text

        def save_pretrained(self, folder, safe_serialization: bool) -> None:
            (Path(folder) / "model_index.json").write_text(self.text)

    out = tmp_path / "models" / "m"
    save_pipeline_folder(Pipe("first"), str(out))
    save_pipeline_folder(Pipe("second"), str(out))
    assert (out / "model_index.json").read_text() == "second"
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]  # no staging folder left
