"""`train.optimizer`: AdamW, AdamW 8-bit (CUDA), Adafactor and Prodigy, each keeping the learning
rate of each parameter group (UNet LoRA, text-encoder LoRA) and failing with what to do where it
cannot run."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from diffusers.optimization import get_scheduler

from lora_studio.core import events as ev
from lora_studio.core.errors import ConfigError
from lora_studio.core.train.config import OPTIMIZERS
from lora_studio.core.train.optimizers import learning_rate_warning, make_optimizer
from test_train_loop import dataset, lora_tensors, make_config, run  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # steady on a busy machine

HAS_PRODIGY = importlib.util.find_spec("prodigyopt") is not None
needs_prodigy = pytest.mark.skipif(not HAS_PRODIGY, reason="prodigyopt is not installed "
                                   "(pip install prodigyopt)")


def two_groups(fast_lr: float, slow_lr: float) -> tuple[list[dict], torch.Tensor, torch.Tensor]:
    """Two identical 16x16 parameters in groups with their own learning rates."""
    torch.manual_seed(0)
    start = torch.randn(16, 16)
    fast, slow = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    return [{"params": [fast], "lr": fast_lr}, {"params": [slow], "lr": slow_lr}], fast, slow


def train_steps(optimizer, params, steps: int, scheduler=None) -> None:
    for _ in range(steps):
        loss = sum(((p - 1) ** 2).sum() for p in params)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()


@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_each_group_moves_at_its_own_learning_rate(name):
    groups, fast, slow = two_groups(1e-3, 1e-5)
    start = fast.detach().clone()
    optimizer = make_optimizer(name, groups, 1e-3, 0.0, "cpu")
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=1, num_training_steps=10)
    train_steps(optimizer, [fast, slow], 4, scheduler)

    fast_moved = (fast.detach() - start).abs().sum().item()
    slow_moved = (slow.detach() - start).abs().sum().item()
    assert fast_moved > 0 and slow_moved > 0
    assert 50 < fast_moved / slow_moved < 200  # about the 100x between the learning rates
    # The schedule scaled both groups alike and kept their ratio.
    fast_lr, slow_lr = (group["lr"] for group in optimizer.param_groups)
    assert 0 < fast_lr < 1e-3 and fast_lr / slow_lr == pytest.approx(100)


def test_adafactor_keeps_factored_moments_so_it_needs_less_memory_than_adamw():
    def state_numel(name):
        param = torch.nn.Parameter(torch.randn(64, 64))
        optimizer = make_optimizer(name, [{"params": [param], "lr": 1e-4}], 1e-4, 0.0, "cpu")
        train_steps(optimizer, [param], 1)
        return sum(v.numel() for v in optimizer.state[param].values()
                   if isinstance(v, torch.Tensor))

    assert state_numel("adamw") >= 2 * 64 * 64
    assert state_numel("adafactor") < 64 * 64 // 10  # one row and one column of moments


@pytest.mark.parametrize("name, lr", [("adafactor", 1e-3),
                                      pytest.param("prodigy", 1.0, marks=needs_prodigy)])
def test_a_run_on_the_tiny_model_learns_and_resumes(name, lr, tiny_model_dir, dataset, tmp_path):
    cfg = make_config(tiny_model_dir, dataset, tmp_path / "out", checkpoint={"every": 2},
                      train={"steps": 3, "optimizer": name, "learning_rate": lr,
                             "lr_scheduler": "cosine", "warmup_steps": 1})
    rec = run(cfg)
    assert isinstance(rec.terminal, ev.Finished)
    ups = [t for k, t in lora_tensors(cfg.lora_path).items() if k.endswith("lora_up.weight")]
    assert ups and max(t.abs().max().item() for t in ups) > 0  # the zero-initialised up moved
    lrs = [e.lr for e in rec.of(ev.StepProgress)]
    assert lrs[0] == pytest.approx(lr) and lrs[1] < lrs[0]  # the cosine schedule drives it

    rec = run(cfg, resume=tmp_path / "out" / "checkpoints" / "step-2")  # the optimizer's state
    assert isinstance(rec.terminal, ev.Finished)
    assert [e.step for e in rec.of(ev.StepProgress)] == [3]


@needs_prodigy
def test_prodigy_raises_its_own_step_size_under_a_schedule():
    groups, fast, slow = two_groups(1.0, 1.0)
    start_loss = ((fast.detach() - 1) ** 2).sum().item()
    optimizer = make_optimizer("prodigy", groups, 1.0, 0.0, "cpu")
    scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=2,
                              num_training_steps=40)
    train_steps(optimizer, [fast, slow], 40, scheduler)
    d0 = optimizer.param_groups[0]["d0"]
    assert optimizer.param_groups[0]["d"] > 10 * d0  # the step size it estimated grew
    assert ((fast.detach() - 1) ** 2).sum().item() < start_loss
    assert [g["lr"] for g in optimizer.param_groups] == [1.0, 1.0]  # the schedule's multiplier


def test_prodigy_with_a_different_text_encoder_rate_says_to_use_one_rate():
    groups, _, _ = two_groups(1.0, 0.5)
    with pytest.raises(ConfigError) as err:
        make_optimizer("prodigy", groups, 1.0, 0.0, "cpu")
    assert err.value.key == "lora.text_encoder_lr"
    assert "lora.text_encoder_lr = 0" in err.value.fix


def test_prodigy_without_prodigyopt_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "prodigyopt", None)  # makes the import fail
    groups, _, _ = two_groups(1.0, 1.0)
    with pytest.raises(ConfigError) as err:
        make_optimizer("prodigy", groups, 1.0, 0.0, "cpu")
    assert err.value.key == "train.optimizer"
    assert "prodigyopt" in err.value.what and "pip install prodigyopt" in err.value.fix


def test_adamw8bit_without_cuda_and_an_unknown_name_fail_with_what_to_use():
    groups, _, _ = two_groups(1e-4, 1e-4)
    with pytest.raises(ConfigError, match="CUDA") as err:
        make_optimizer("adamw8bit", groups, 1e-4, 0.0, "cpu")
    assert "adamw" in err.value.fix
    with pytest.raises(ConfigError, match="unknown optimizer 'sgd'") as err:
        make_optimizer("sgd", groups, 1e-4, 0.0, "cpu")
    assert all(name in err.value.fix for name in OPTIMIZERS)


def test_a_prodigy_learning_rate_meant_for_adamw_gets_a_warning():
    assert "1.0" in learning_rate_warning("prodigy", 1e-4)
    assert learning_rate_warning("prodigy", 1.0) is None
    assert learning_rate_warning("adamw", 1e-4) is None
