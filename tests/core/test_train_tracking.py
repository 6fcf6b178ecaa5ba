"""kohya's log_with = "tensorboard": the curves of a run as TensorBoard logs."""

from __future__ import annotations

import sys

import pytest

import torch

from lora_studio.core import events as ev
from lora_studio.core.train.tracking import module_update_norms
from test_train_loop import dataset, make_config, run  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: 1 thread is steadier


def test_a_run_writes_loss_lr_grad_norm_validation_and_weight_norms(tiny_model_dir, dataset,
                                                                     tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_config(tiny_model_dir, dataset, tmp_path / "o",
                      train={"steps": 10, "log_with": "tensorboard", "validate_every_n_steps": 5},
                      lora={"train_text_encoder": True, "text_encoder_lr": 1e-4},
                      dataset={"validation_path": str(dataset)})
    rec = run(cfg)
    assert isinstance(rec.terminal, ev.Finished), rec.terminal
    logs = EventAccumulator(str(tmp_path / "o" / "logs" / "t")).Reload()
    scalars = logs.Tags()["scalars"]
    steps = {tag: [e.step for e in logs.Scalars(tag)] for tag in scalars}
    assert steps["loss/train"] == list(range(1, 11)) and steps["grad_norm"] == list(range(1, 11))
    assert [e.value for e in logs.Scalars("loss/train")] == \
        [pytest_approx(e.loss) for e in rec.of(ev.StepProgress)]
    assert all(e.value == pytest_approx(1e-4) for e in logs.Scalars("lr/text_encoder"))
    assert steps["loss/validation"] == [0, 5, 10]
    norms = [tag for tag in scalars if tag.startswith("weight_norm/")]
    assert any(tag.startswith("weight_norm/unet.") for tag in norms)
    assert any(tag.startswith("weight_norm/text_encoder.") for tag in norms)
    assert all(steps[tag] == [10] and logs.Scalars(tag)[0].value > 0 for tag in norms)


def pytest_approx(value):
    import pytest

    return pytest.approx(value, rel=1e-6)


def test_without_tensorboard_the_run_stops_before_loading_and_says_what_to_install(
        tiny_model_dir, dataset, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    cfg = make_config(tiny_model_dir, dataset, tmp_path / "o",
                      train={"log_with": "tensorboard"})
    rec = run(cfg)
    assert isinstance(rec.terminal, ev.Failed)
    assert "train.log_with" in rec.terminal.message and "pip install tensorboard" in \
        rec.terminal.message
    assert not rec.of(ev.JobStarted)


def test_module_update_norms_are_the_updates_frobenius_norms():
    torch.manual_seed(0)
    down, up = torch.randn(4, 12), torch.randn(9, 4)
    state = {"unet.x.to_q.lora_A.weight": down, "unet.x.to_q.lora_B.weight": up}
    (value,) = module_update_norms(state, 0.5).values()
    assert abs(value - torch.linalg.norm(0.5 * up @ down).item()) < 1e-4
