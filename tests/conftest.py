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


# The star LoRA of the quickstart (tests/e2e/test_tiny_shapes_lora.py) trains for about 3.5
# minutes on one core. It starts as soon as a selected test needs it, so it trains beside the
# tests that run before it instead of in front of its own.
_STAR_TRAINING: dict = {}


def _start_star_training() -> tuple:
    import tempfile

    from tiny_shapes_loras import start_training

    out = Path(tempfile.mkdtemp(prefix="lora_studio_star_")) / "star"
    _STAR_TRAINING["run"] = (start_training(out), out)
    return _STAR_TRAINING["run"]


def pytest_collection_finish(session):
    """After selection (-k, -m): start the training if a test that will run needs it."""
    if session.config.option.collectonly:
        return
    if any("star_lora" in getattr(item, "fixturenames", ()) for item in session.items):
        _start_star_training()


def pytest_sessionfinish(session, exitstatus):
    import shutil

    run = _STAR_TRAINING.pop("run", None)
    if run is not None:
        proc, out = run
        if proc.poll() is None:  # the session stopped before a test waited for it
            proc.kill()
            proc.wait()
        shutil.rmtree(out.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def star_lora() -> str:
    """The quickstart's star LoRA file, trained by `lora-studio train` on the shipped sample."""
    from tiny_shapes_loras import finish_training

    proc, out = _STAR_TRAINING.get("run") or _start_star_training()
    return finish_training(proc, out, "zqstar")
