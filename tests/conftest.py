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


# The concept LoRAs of tests/e2e/test_tiny_shapes_lora.py train for about 4 minutes each on
# one core. Each starts as soon as a selected test needs it, so they train beside the tests
# that run before them instead of in front of their own.
_TRAINING: dict = {}  # fixture name -> (process, output folder)


def _start_training(fixture: str) -> tuple:
    import tempfile

    from lora_studio.core.models.tiny_shapes import sample_data
    from tiny_shapes_loras import start_training, stripes_settings

    out = Path(tempfile.mkdtemp(prefix=f"lora_studio_{fixture}_")) / "lora"
    if fixture == "star_lora":  # the quickstart as it ships
        _TRAINING[fixture] = (start_training(out), out)
    else:
        data = sample_data.write_concept_dataset(out.parent / "data", "stripes")
        _TRAINING[fixture] = (start_training(out, *stripes_settings(data)), out)
    return _TRAINING[fixture]


def pytest_collection_finish(session):
    """After selection (-k, -m): start the trainings that a test that will run needs."""
    if session.config.option.collectonly:
        return
    for fixture in ("star_lora", "stripes_lora"):
        if any(fixture in getattr(item, "fixturenames", ()) for item in session.items):
            _start_training(fixture)


def pytest_sessionfinish(session, exitstatus):
    import shutil

    for proc, out in _TRAINING.values():
        if proc.poll() is None:  # the session stopped before a test waited for it
            proc.kill()
            proc.wait()
        shutil.rmtree(out.parent, ignore_errors=True)
    _TRAINING.clear()


@pytest.fixture(scope="session")
def star_lora() -> str:
    """The quickstart's star LoRA file, trained by `lora-studio train` on the shipped sample."""
    from tiny_shapes_loras import finish_training

    proc, out = _TRAINING.get("star_lora") or _start_training("star_lora")
    return finish_training(proc, out, "zqstar")


@pytest.fixture(scope="session")
def stripes_lora() -> str:
    """A stripes LoRA (`tiny_shapes_loras.stripes_settings`), trained by `lora-studio train`."""
    from tiny_shapes_loras import finish_training

    proc, out = _TRAINING.get("stripes_lora") or _start_training("stripes_lora")
    return finish_training(proc, out, "zqstripe")
