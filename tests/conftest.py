"""Shared test setup: offline, headless, CPU, and an isolated user data folder."""

from __future__ import annotations

import os

# Set before anything imports huggingface_hub / Qt.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_user_data(tmp_path_factory, monkeypatch):
    """Each test gets its own user data folder, so nothing leaks between tests or onto $HOME."""
    monkeypatch.setenv("LORA_STUDIO_HOME", str(tmp_path_factory.mktemp("lora_studio_home")))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random-weight SD 1.x model in diffusers format, built once per test session."""
    from lora_studio.core.models.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd", seed=0)


@pytest.fixture(scope="session")
def tiny_vpred_model_dir(tmp_path_factory) -> Path:
    """A tiny SD 2.x-style v-prediction model in diffusers format."""
    from lora_studio.core.models.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd2-v", seed=1,
                           prediction_type="v_prediction", arch="sd2")


@pytest.fixture(scope="module")
def one_torch_thread():
    """The tiny model gains nothing from 2 threads, and they are several times slower when the
    machine is busy (other test runs): one thread keeps these tests fast and steady."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
