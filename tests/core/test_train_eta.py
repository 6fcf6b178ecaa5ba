"""The ETA counts the side work still to come (previews, checkpoints, saves, validations) at the
time each took so far, not the steps alone."""

from __future__ import annotations

import pytest

from lora_studio.core.train.eta import Eta, remaining_occurrences


def test_remaining_occurrences_count_the_multiples_before_the_last_step():
    assert remaining_occurrences(0, 1000, 250) == 3  # 250, 500, 750 (1000 is the end's own)
    assert remaining_occurrences(250, 1000, 250) == 2
    assert remaining_occurrences(999, 1000, 250) == 0
    assert remaining_occurrences(10, 1000, 0) == 0


def test_the_eta_adds_previews_and_checkpoints_still_to_come():
    eta = Eta()
    for _ in range(5):
        eta.add_step(0.5)
    schedule = {"previews": (250, 1), "checkpoint": (500, 0), "validation": (100, 1)}
    assert eta.remaining(300, 1000, schedule) == pytest.approx(350.0)  # none measured yet
    eta.add_side_work("previews", 20.0)
    eta.add_side_work("previews", 30.0)
    eta.add_side_work("checkpoint", 4.0)
    # 700 steps x 0.5 s + previews at 500, 750 and the end (3 x 25 s) + a checkpoint at 500
    assert eta.remaining(300, 1000, schedule) == pytest.approx(350.0 + 75.0 + 4.0)
    assert eta.remaining(1000, 1000, schedule) == 0.0
