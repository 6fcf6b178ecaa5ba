"""The watchdog: a non-finite loss or gradient never reaches the LoRA's weights; the last good
LoRA is saved; the CLI stops with the step and what to try (exit code 2), the app pauses and
may go on at a lower learning rate."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import lora_studio.core.train.trainer as trainer
from lora_studio.core import events as ev
from lora_studio.core.jobs import JobControl
from test_train_loop import Recorder, dataset, make_config, run  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: 1 thread is steadier

BAD_STEP = 3


def nan_loss_at(monkeypatch, step: int) -> None:
    """Test hook: the loss of the `step`-th step (1-based) becomes NaN."""
    calls = []
    real = trainer.step_loss

    def hooked(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == step else loss

    monkeypatch.setattr(trainer, "step_loss", hooked)


def nan_gradient_at(monkeypatch, step: int) -> None:
    """Test hook: a finite loss whose backward puts NaN into one LoRA gradient at `step`."""
    import lora_studio.core.train.optimizers as optimizers

    seen = []
    real = optimizers.make_optimizer

    def hooked(name, groups, *args):
        param = groups[0]["params"][0]
        param.register_hook(lambda grad: grad * float("nan") if len(seen) == step else grad)
        return real(name, groups, *args)

    counting = trainer.step_loss

    def count(*args, **kwargs):
        seen.append(1)
        return counting(*args, **kwargs)

    monkeypatch.setattr(optimizers, "make_optimizer", hooked)
    monkeypatch.setattr(trainer, "step_loss", count)


def finite(path) -> dict[str, torch.Tensor]:
    tensors = load_file(str(path))
    assert all(torch.isfinite(t).all() for t in tensors.values())
    return tensors


def test_a_nan_loss_stops_the_cli_run_and_keeps_the_last_good_lora(tiny_model_dir, dataset,
                                                                  tmp_path, monkeypatch):
    good = make_config(tiny_model_dir, dataset, tmp_path / "good", train={"steps": BAD_STEP - 1})
    assert isinstance(run(good).terminal, ev.Finished)
    nan_loss_at(monkeypatch, BAD_STEP)
    cfg = make_config(tiny_model_dir, dataset, tmp_path / "bad", train={"steps": 6})
    rec = Recorder()
    terminal, code = trainer.run_training_job_with_code(cfg, rec, JobControl())
    assert isinstance(terminal, ev.Failed) and code == 2
    assert f"diverged at step {BAD_STEP}: the loss became nan" in terminal.message
    assert f"LoRA of step {BAD_STEP - 1}, the last good one, is saved" in terminal.message
    assert "learning_rate" in terminal.message and "bf16" in terminal.message
    a, b = finite(good.lora_path), finite(cfg.lora_path)
    assert all(torch.equal(a[k], b[k]) for k in a)  # exactly the weights before the bad step


def test_a_nan_gradient_never_reaches_the_weights(tiny_model_dir, dataset, tmp_path,
                                                  monkeypatch):
    good = make_config(tiny_model_dir, dataset, tmp_path / "good",
                       train={"steps": BAD_STEP - 1, "max_grad_norm": 0.0})
    run(good)
    nan_gradient_at(monkeypatch, BAD_STEP)
    cfg = make_config(tiny_model_dir, dataset, tmp_path / "bad",
                      train={"steps": 6, "max_grad_norm": 0.0})
    rec = run(cfg)
    assert isinstance(rec.terminal, ev.Failed)
    assert f"diverged at step {BAD_STEP}: the gradient norm became nan" in rec.terminal.message
    a, b = finite(good.lora_path), finite(cfg.lora_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_in_the_app_the_run_pauses_and_goes_on_at_a_lower_learning_rate(tiny_model_dir, dataset,
                                                                      tmp_path, monkeypatch):
    nan_loss_at(monkeypatch, BAD_STEP)
    control = JobControl(pause_on_divergence=True)
    paused_when_told = []

    def answer(event):
        if isinstance(event, ev.Diverged):
            paused_when_told.append(control.paused)
            control.request_lr_scale(0.5)  # "lower the learning rate and continue"
            control.resume()

    cfg = make_config(tiny_model_dir, dataset, tmp_path / "o", train={"steps": 5})
    rec = run(cfg, control, on_event=answer)
    assert isinstance(rec.terminal, ev.Finished), rec.terminal
    (told,) = rec.of(ev.Diverged)
    assert told.step == BAD_STEP and told.lora_path == cfg.lora_path and paused_when_told == [True]
    rates = {e.step: e.lr for e in rec.of(ev.StepProgress)}
    assert BAD_STEP not in rates and rates[BAD_STEP + 1] == rates[1] / 2
    finite(cfg.lora_path)
