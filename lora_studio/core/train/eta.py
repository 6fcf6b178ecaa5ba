"""The time a run has left: its steps and the side work still to come (previews, checkpoints,
LoRA saves, validations), each at the time it took so far.

A preview every 250 steps can take as long as 50 steps; an ETA from the step time alone would
be wrong by that much each time. Side work that has not happened yet is not guessed at: it
counts from its first measurement on.
"""

from __future__ import annotations

from collections import deque


def remaining_occurrences(step: int, total: int, every: int) -> int:
    """How many of the steps after `step` and before `total` are multiples of `every`."""
    if every <= 0 or step >= total:
        return 0
    return (total - 1) // every - step // every


class Eta:
    """Step times (the last 20) and the mean duration of each kind of side work."""

    def __init__(self, window: int = 20):
        self.step_times: deque[float] = deque(maxlen=window)
        self.side: dict[str, tuple[float, int]] = {}  # kind -> (total seconds, count)

    def add_step(self, seconds: float) -> None:
        self.step_times.append(seconds)

    def add_side_work(self, kind: str, seconds: float) -> None:
        total, count = self.side.get(kind, (0.0, 0))
        self.side[kind] = (total + seconds, count + 1)

    @property
    def seconds_per_step(self) -> float:
        return sum(self.step_times) / len(self.step_times) if self.step_times else 0.0

    def remaining(self, step: int, total: int, schedule: dict[str, tuple[int, int]]) -> float:
        """Seconds left after `step` of `total`; `schedule[kind] = (every, extra)`: the side
        work runs every `every` steps before the last, plus `extra` times at the end."""
        seconds = self.seconds_per_step * max(total - step, 0)
        for kind, (every, extra) in schedule.items():
            if kind in self.side:
                spent, count = self.side[kind]
                times = remaining_occurrences(step, total, every) + (extra if step < total else 0)
                seconds += spent / count * times
        return seconds
