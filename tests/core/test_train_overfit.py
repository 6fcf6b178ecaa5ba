"""The overfitting alert: validation rising while training falls, or training collapsing."""

from __future__ import annotations

import pytest
from lora_studio.core.train.overfit import check_overfitting

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: 1 thread is steadier


def steps(values, every=10):
    return [(every * (k + 1), v) for k, v in enumerate(values)]


def falling(n, start=0.3, end=0.1):
    return [(s, start + (end - start) * s / n) for s in range(1, n + 1)]


def test_validation_rising_while_training_falls_is_overfitting_with_the_best_step():
    validation = [(0, 0.30), (20, 0.22), (40, 0.20), (60, 0.21), (80, 0.215), (100, 0.23)]
    alert = check_overfitting(falling(100), validation)
    assert alert is not None and alert.best_step == 40 and alert.best_loss == 0.20
    assert "rose 3 times" in alert.message and "fewer steps" in alert.advice


def test_healthy_and_noisy_runs_raise_no_alert():
    assert check_overfitting(falling(100), [(0, 0.3), (50, 0.25), (100, 0.2)]) is None
    noisy = [(0, 0.30), (20, 0.22), (40, 0.23), (60, 0.21), (80, 0.22), (100, 0.205)]
    assert check_overfitting(falling(100), noisy) is None
    small_rise = [(0, 0.3), (20, 0.200), (40, 0.201), (60, 0.202), (80, 0.203)]
    assert check_overfitting(falling(80), small_rise) is None  # within 5 % of the best


def test_training_loss_collapsing_far_below_validation_is_overfitting():
    validation = [(0, 0.30), (50, 0.20), (100, 0.21), (150, 0.205), (200, 0.22)]
    alert = check_overfitting(falling(200, 0.3, 0.05), validation)
    assert alert is not None and alert.best_step == 50 and "below half" in alert.message


def test_a_run_whose_validation_rises_says_so_once_with_the_best_step(tiny_model_dir, tmp_path,
                                                                       monkeypatch):
    """The trainer checks after each validation (here a scripted validation curve: it falls to
    step 2, then rises) and says it once, also in the run's events.jsonl."""
    import lora_studio.core.train.validation as validation
    from lora_studio.core import events as ev
    from lora_studio.core.train.runs import summarize_run
    from test_train_loop import make_config, make_dataset, run

    curve = iter([0.30, 0.25, 0.20, 0.21, 0.22, 0.24, 0.26, 0.28])
    monkeypatch.setattr(validation, "validation_loss", lambda *a, **k: next(curve))
    data = make_dataset(tmp_path / "d")
    cfg = make_config(tiny_model_dir, data, tmp_path / "o",
                      dataset={"validation_path": str(data)},
                      train={"steps": 7, "validate_every_n_steps": 1, "learning_rate": 1e-2})
    rec = run(cfg)
    assert isinstance(rec.terminal, ev.Finished)
    (alert,) = rec.of(ev.Overfitting)
    assert alert.step >= 5 and alert.best_step == 2  # 3 rises first complete at step 5
    assert any("Overfitting" in line for line in summarize_run(tmp_path / "o").log)
