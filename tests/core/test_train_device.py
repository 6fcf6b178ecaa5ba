"""Device choice, tested without a GPU by faking what torch reports."""

from __future__ import annotations

import pytest
import torch

from lora_studio.core.errors import DeviceError
from lora_studio.core.train.device import configure_backends, select_device


@pytest.fixture
def fake_cuda(monkeypatch):
    def install(bf16: bool = True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Fake RTX 9090")
    return install


def test_cpu_only_machine_trains_in_fp32_on_cpu():
    choice = select_device("auto", "no", cuda_available=False, mps_available=False)
    assert (choice.kind, choice.mixed_precision, choice.weight_dtype_name) == \
        ("cpu", "no", "float32")


def test_fp16_on_cpu_is_a_clear_error_naming_the_key():
    with pytest.raises(DeviceError) as info:
        select_device("auto", "fp16", cuda_available=False, mps_available=False)
    text = info.value.user_message()
    assert "train.mixed_precision" in text and "fp16 needs a CUDA GPU" in text
    assert 'mixed_precision = "no"' in text


def test_bf16_on_cpu_is_allowed_with_a_note_and_fp32_weights():
    choice = select_device("cpu", "bf16", cuda_available=False, mps_available=False)
    assert choice.kind == "cpu" and choice.weight_dtype_name == "float32"
    assert any("slower" in note for note in choice.notes)


def test_auto_prefers_cuda_with_half_weights_and_tf32(fake_cuda):
    fake_cuda(bf16=True)
    choice = select_device("auto", "bf16")
    assert choice.kind == "cuda" and choice.name == "Fake RTX 9090"
    assert choice.weight_dtype_name == "bfloat16"
    assert select_device("auto", "fp16").weight_dtype_name == "float16"
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        configure_backends(choice)
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_bf16_on_a_gpu_without_bf16_is_an_error(fake_cuda):
    fake_cuda(bf16=False)
    with pytest.raises(DeviceError, match="bf16 is not supported by this GPU \\(Fake RTX 9090\\)"):
        select_device("auto", "bf16")
    assert select_device("auto", "fp16").mixed_precision == "fp16"


def test_mps_is_used_when_there_is_no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device("auto", "no").kind == "mps"
    with pytest.raises(DeviceError, match="bf16 is not supported on Apple MPS"):
        select_device("auto", "bf16")


def test_asking_for_a_missing_gpu_says_what_to_do():
    with pytest.raises(DeviceError, match="no CUDA GPU is available") as info:
        select_device("cuda", "no", cuda_available=False, mps_available=False)
    assert 'device = "auto"' in info.value.fix
