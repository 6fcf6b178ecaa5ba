"""Legacy pickle checkpoints: plain weights load (with a warning), code never runs."""

from __future__ import annotations

import logging
import os
import pickle

import pytest
import torch
from models_fixtures import component_mismatches, tiny_models  # noqa: F401

from lora_studio.core.errors import StudioError, UnsafeFileError
from lora_studio.core.models.loading import load_pipeline, resolve_model
from lora_studio.core.models.original_layout import pipeline_to_original_state_dict


class _Payload:
    """Unpickling this would create the marker file (and could do anything else)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_torch_checkpoint(path, marker):
    # What a poisoned model download looks like: real-looking weights plus a payload.
    torch.save({"state_dict": {"model.diffusion_model.out.2.weight": torch.zeros(4, 32, 3, 3)},
                "callback": _Payload(str(marker))}, str(path))


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin", ".pth"])
def test_malicious_pickle_is_refused_without_running_its_code(tmp_path, suffix):
    marker = tmp_path / "PWNED"
    evil = tmp_path / f"model{suffix}"
    _malicious_torch_checkpoint(evil, marker)
    # sanity: the payload is real (a plain unpickle would run it)
    with pytest.raises(UnsafeFileError) as err:
        resolve_model(evil)
    with pytest.raises(UnsafeFileError):
        load_pipeline(evil)
    assert not marker.exists()
    assert evil.name in err.value.what
    assert ".safetensors" in err.value.fix


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_with_payload_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "legacy.ckpt"
    evil.write_bytes(pickle.dumps(_Payload(str(marker))))  # not even a torch file
    with pytest.raises(StudioError) as err:
        resolve_model(evil)
    assert not marker.exists()
    assert err.value.fix


def test_the_payload_is_live_outside_the_studio(tmp_path):
    """Proves the test files above really carry working code (so 'not run' means something)."""
    marker = tmp_path / "PWNED"
    evil = tmp_path / "model.ckpt"
    _malicious_torch_checkpoint(evil, marker)
    torch.load(str(evil), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_weights_only_ckpt_loads_with_a_warning(tiny_models, tmp_path, caplog, arch):
    tiny = tiny_models[arch]
    ckpt = tmp_path / f"tiny-{arch}.ckpt"
    torch.save({"global_step": 1000, "state_dict": pipeline_to_original_state_dict(
        tiny.reference_pipeline())}, str(ckpt))

    with caplog.at_level(logging.WARNING, logger="lora_studio"):
        pipe = load_pipeline(ckpt, config_dir=tiny.config_dir)
    assert any("pickle" in r.getMessage() and ckpt.name in r.getMessage() for r in caplog.records)
    assert pipe.model_source.arch == arch
    # a resolved source loads the same way (the file is read again, still weights-only)
    again = load_pipeline(resolve_model(ckpt), config_dir=tiny.config_dir)
    assert not any(component_mismatches(again, pipe).values())
    mismatches = component_mismatches(pipe, tiny.reference_pipeline())
    assert all(not bad for bad in mismatches.values()), mismatches


def test_sd2_ckpt_global_step_rule_picks_epsilon_for_the_512_base(tiny_models, tmp_path):
    state = pipeline_to_original_state_dict(tiny_models["sd2"].reference_pipeline())
    state.pop("v_pred", None)
    base = tmp_path / "512-base-ema.ckpt"
    torch.save({"global_step": 875000, "state_dict": state}, str(base))
    other = tmp_path / "768-v-ema.ckpt"
    torch.save({"global_step": 140000, "state_dict": state}, str(other))
    assert resolve_model(base).arch == "sd2"
    assert resolve_model(other).arch == "sd2-v"
