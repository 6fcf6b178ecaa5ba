"""The one-line memory estimate shown before Start: the summary a person reads, the parts and
the advice in its tooltip, the warning colours against the GPU's memory, and clearing."""

from __future__ import annotations

import pytest

from lora_studio.core.train.config import TrainConfig
from lora_studio.core.train.memory import estimate_memory, lower_memory_advice
from lora_studio.ui.widgets.memory_estimate import OVER_STYLE, MemoryEstimateView


@pytest.fixture(scope="module")
def sdxl_estimate():
    """SDXL at 1024 px, bf16, no checkpointing, one image (the shipped configs, counted on the
    meta device), and the advice for it."""
    cfg = TrainConfig()
    cfg.dataset.resolution, cfg.train.mixed_precision = 1024, "bf16"
    buckets = [(1024, 1024)]
    return estimate_memory(cfg, "sdxl", buckets), lower_memory_advice(cfg, "sdxl", buckets)


@pytest.fixture
def view(qtbot) -> MemoryEstimateView:
    widget = MemoryEstimateView()
    qtbot.addWidget(widget)
    widget.resize(720, 40)
    return widget


def test_shows_the_summary_and_lists_the_parts_and_advice_in_its_tooltip(view, sdxl_estimate,
                                                                        tmp_path):
    estimate, advice = sdxl_estimate
    assert view.isHidden() and view.text() == ""
    view.show_estimate(estimate, advice)
    assert view.isVisible()
    assert view.text() == estimate.summary()
    assert view.text().startswith("Estimated GPU memory: ")
    assert "(weights 6.5, LoRA+optimizer 0.3, activations 7.2, overhead" in view.text()
    tip = view.toolTip()
    for part in ("UNet weights", "optimizer state", "activations", "overhead", "total"):
        assert part in tip
    assert "train.gradient_checkpointing = true" in tip
    assert tip.index("train.gradient_checkpointing") < tip.index("train.optimizer")
    assert view.grab().save(str(tmp_path / "memory.png"))


def test_warns_when_the_estimate_exceeds_the_gpu(view, sdxl_estimate, tmp_path):
    estimate, advice = sdxl_estimate
    view.show_estimate(estimate, advice)
    assert view.level == "none"
    view.set_vram_gb(8)
    assert view.level == "over" and view.styleSheet() == OVER_STYLE
    assert view.text().endswith(": more than this GPU's 8 GiB")
    assert view.grab().save(str(tmp_path / "over.png"))
    view.set_vram_gb(estimate.total / 1024 ** 3 * 1.05)
    assert view.level == "near" and "close to this GPU's" in view.text()
    view.set_vram_gb(80)
    assert view.level == "ok" and view.text() == estimate.summary()


def test_clear_hides_it_until_the_next_estimate(view, sdxl_estimate):
    estimate, advice = sdxl_estimate
    view.set_vram_gb(8)
    view.show_estimate(estimate, advice)
    view.clear()
    assert view.isHidden() and view.text() == "" and view.toolTip() == ""
    assert view.level == "none" and view.estimate is None
    view.show_estimate(estimate)  # no advice: the tooltip still lists the parts
    assert view.level == "over" and "To lower it" not in view.toolTip()
