"""Overfitting, noticed while it happens: the validation loss rising over several validations
while the training loss keeps falling, or the training loss collapsing far below it.

The best step is the one with the lowest validation loss: the LoRA saved nearest it is the one
to keep ("Compare checkpoints" opens there). The advice is the usual remedy for a LoRA that
memorises its images: fewer steps, a lower rank or learning rate, more (or more varied) images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

RISING_VALIDATIONS = 3  # consecutive rises of the validation loss
RISE = 1.05  # ... ending at least 5 % above the best value
COLLAPSE = 0.5  # training loss (smoothed) below half the validation loss
SMOOTHING = 10  # steps averaged for the training loss

ADVICE = ("Keep the LoRA saved nearest the best step, or train again with fewer steps, a lower "
          "rank or learning rate, or more (and more varied) images.")


@dataclass(frozen=True)
class OverfitAlert:
    best_step: int
    best_loss: float
    message: str
    advice: str = ADVICE


def _smoothed(losses: Sequence[tuple[int, float]], step: int) -> float | None:
    """Mean training loss of the `SMOOTHING` steps up to `step`."""
    window = [loss for s, loss in losses if step - SMOOTHING < s <= step]
    return sum(window) / len(window) if window else None


def check_overfitting(losses: Sequence[tuple[int, float]],
                      validation: Sequence[tuple[int, float]]) -> OverfitAlert | None:
    """An alert when `validation` (step, loss) shows overfitting against the training `losses`
    (step, loss); None otherwise."""
    if len(validation) < RISING_VALIDATIONS + 1:
        return None
    best_step, best = min(validation, key=lambda point: (point[1], point[0]))
    last_step, last = validation[-1]
    recent = [loss for _, loss in validation[-RISING_VALIDATIONS - 1:]]
    rising = all(b > a for a, b in zip(recent, recent[1:])) and last > best * RISE
    train_now = _smoothed(losses, last_step)
    train_then = _smoothed(losses, validation[-RISING_VALIDATIONS - 1][0])
    if rising and train_now is not None and train_then is not None and train_now < train_then:
        return OverfitAlert(best_step, best, (
            f"Overfitting: the validation loss rose {RISING_VALIDATIONS} times in a row to "
            f"{last:.4f} (best {best:.4f} at step {best_step}) while the training loss kept "
            f"falling."))
    if train_now is not None and last_step > best_step and train_now < COLLAPSE * last:
        return OverfitAlert(best_step, best, (
            f"Overfitting: the training loss ({train_now:.4f}) fell below half the validation "
            f"loss ({last:.4f}); the validation loss was best at step {best_step}."))
    return None
