"""Base models saved in half precision (hub "fp16" variants, folders saved in fp16) train in the
run's precision: the frozen base in the run's weight dtype, every LoRA parameter in fp32."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lora_studio.core import events as ev
from lora_studio.core.jobs import JobControl
from lora_studio.core.train.config import config_from_dict
from lora_studio.core.train.trainer import run_training_job
from test_train_loop import make_dataset  # same folder (pytest puts it on sys.path)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: 1 thread is steadier


@pytest.fixture(scope="module")
def half_models(tiny_model_dir, tmp_path_factory):
    """The tiny model saved in fp16, as plain files and as a hub "fp16" variant."""
    from diffusers import StableDiffusionPipeline

    root = tmp_path_factory.mktemp("fp16")
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.to(torch.float16)
    pipe.save_pretrained(root / "plain")
    pipe.save_pretrained(root / "variant", variant="fp16")
    assert list((root / "variant" / "unet").glob("*.fp16.safetensors"))
    return {"plain": root / "plain", "variant": root / "variant"}


@pytest.mark.parametrize("layout", ["plain", "variant"])
def test_fp16_saved_model_trains_a_text_encoder_lora_without_nan(layout, half_models, tmp_path,
                                                                 monkeypatch):
    import lora_studio.core.train.optimizers as optimizers

    dtypes = set()
    real = optimizers.make_optimizer

    def spy(name, groups, *args):
        dtypes.update(p.dtype for group in groups for p in group["params"])
        return real(name, groups, *args)

    monkeypatch.setattr(optimizers, "make_optimizer", spy)
    cfg = config_from_dict({
        "model": {"base": str(half_models[layout])},
        "dataset": {"path": str(make_dataset(tmp_path / "data")), "resolution": 32},
        "lora": {"rank": 4, "alpha": 4.0, "train_text_encoder": True},
        "train": {"steps": 4, "learning_rate": 1e-4, "mixed_precision": "no"},
        "output": {"path": str(tmp_path / "out"), "name": "h", "save_precision": "fp32"}})
    events: list = []
    run_training_job(cfg, events.append, JobControl())
    assert isinstance(events[-1], ev.Finished), events[-1]
    assert dtypes == {torch.float32}
    losses = [e.loss for e in events if isinstance(e, ev.StepProgress)]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    tensors = load_file(str(cfg.lora_path))
    assert any(k.startswith("lora_te_") for k in tensors)
    assert all(torch.isfinite(t).all() for t in tensors.values())
