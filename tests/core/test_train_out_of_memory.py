"""A GPU out-of-memory error ends the run cleanly: one Failed event (exit code 2 on the CLI)
saying the step reached, the LoRA of the last finished step saved, and the settings that lower
memory. The error is injected (a test hook raising torch.OutOfMemoryError as CUDA does)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import lora_studio.core.train.trainer as trainer
from lora_studio.core import events as ev
from lora_studio.core.jobs import JobControl
from lora_studio.core.train.memory import lower_memory_advice
from lora_studio.core.train.out_of_memory import is_out_of_memory
from test_train_loop import Recorder, dataset, make_config, run  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CUDA_MESSAGE = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
                "of 7.79 GiB of which 1.21 GiB is free.")


def out_of_memory_at(monkeypatch, step: int) -> None:
    """Test hook: the `step`-th step (1-based) runs out of GPU memory in its forward pass."""
    calls = []
    real = trainer.step_loss

    def hooked(*args, **kwargs):
        calls.append(1)
        if len(calls) == step:
            raise torch.OutOfMemoryError(CUDA_MESSAGE)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "step_loss", hooked)


def test_out_of_memory_mid_run_saves_the_lora_so_far_and_says_what_lowers_memory(
        tiny_model_dir, dataset, tmp_path, monkeypatch):
    reference = make_config(tiny_model_dir, dataset, tmp_path / "ref", train={"steps": 4},
                            output={"save_every": 2})
    assert isinstance(run(reference).terminal, ev.Finished)
    out_of_memory_at(monkeypatch, 3)
    cfg = make_config(tiny_model_dir, dataset, tmp_path / "oom", train={"steps": 4})
    rec = Recorder()
    terminal, code = trainer.run_training_job_with_code(cfg, rec, JobControl())
    assert isinstance(terminal, ev.Failed) and code == 2
    assert "The GPU ran out of memory at step 3 of 4." in terminal.message
    assert f"The LoRA of step 2, trained so far, is saved at {cfg.lora_path}." \
        in terminal.message
    advice = lower_memory_advice(cfg, "sd1", model=str(tiny_model_dir))
    assert advice and all(f"{n}. {line}" in terminal.message
                          for n, line in enumerate(advice, 1))
    assert "Traceback" not in terminal.message
    assert [e.step for e in rec.of(ev.LoraSaved)] == [2]
    at_two, saved = load_file(str(tmp_path / "ref" / "t-step2.safetensors")), \
        load_file(str(cfg.lora_path))
    assert at_two.keys() == saved.keys()
    assert all(torch.equal(at_two[k], saved[k]) for k in at_two)  # step 2's weights exactly


def test_out_of_memory_on_the_first_step_saves_nothing_and_says_so(tiny_model_dir, dataset,
                                                                   tmp_path, monkeypatch):
    out_of_memory_at(monkeypatch, 1)
    cfg = make_config(tiny_model_dir, dataset, tmp_path / "oom", train={"steps": 4})
    terminal, code = trainer.run_training_job_with_code(cfg, Recorder(), JobControl())
    assert isinstance(terminal, ev.Failed) and code == 2
    assert "ran out of memory at step 1 of 4. No step had finished, so no LoRA was saved." \
        in terminal.message
    assert not cfg.lora_path.exists()


@pytest.mark.parametrize("exc, expected", [
    (torch.OutOfMemoryError(CUDA_MESSAGE), True),
    (RuntimeError("HIP out of memory. Tried to allocate 20.00 MiB"), True),
    (RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB)"), True),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
    (MemoryError(), False),  # the computer's own memory: not a GPU setting to lower
])
def test_what_counts_as_running_out_of_gpu_memory(exc, expected):
    assert is_out_of_memory(exc) is expected
