"""Which images each training batch holds: a pure function of (seed, batch number).

An epoch lists every dataset image `repeats` times (plus as many regularization slots, kohya's
balance), shuffled with a seeded shuffle. Batches are then drawn within aspect-ratio buckets, so
every image of a batch has one size: the shuffled slots are grouped by bucket (keeping the
shuffled order), each group is cut into batches of `batch_size` (a bucket's last batch may be
smaller), and the batches run in the order of their first slot in the shuffle. With one bucket
this is the shuffle itself cut into batches, so a run without buckets sees what it always did.

Nothing here is stateful beyond caches: a run resumed at step k sees exactly the batches an
unbroken run would have seen, and the flip (and random crop, and caption shuffle) of a sample is
drawn from its position in the endless sample stream. No torch here: `dataset check` counts
steps per epoch with the same code the trainer uses.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Example:
    """One usable image, at a fixed dataset index, with the bucket it trains at."""

    index: int
    image_path: Path
    caption: str
    repeats: int = 1
    regularization: bool = False  # from dataset.reg_path: trained with prior_loss_weight
    bucket: tuple[int, int] = (0, 0)  # (width, height) it trains at
    subset: int = 0  # which dataset folder it came from (its place in the report's subsets)


@dataclass(frozen=True)
class Sample:
    """One image of a batch: which, mirrored or not, and where in the sample stream."""

    index: int
    flip: bool
    position: int  # in the endless stream of samples: seeds the crop, flip and caption draws
    epoch: int


class DataOrder:
    """Maps a batch number (counted over the whole run, every process) to its samples.

    The regularization slots walk on through the regularization images from epoch to epoch, so
    a pool larger than the dataset is all used."""

    def __init__(self, examples: Sequence[Example], *, batch_size: int, seed: int,
                 random_flip: bool):
        self.buckets = {ex.index: ex.bucket for ex in examples}
        self.slots = [ex.index for ex in examples if not ex.regularization
                      for _ in range(ex.repeats)]
        self.reg_pool = [ex.index for ex in examples if ex.regularization
                         for _ in range(ex.repeats)]
        if not self.slots:
            raise ValueError("DataOrder needs at least one dataset example")
        self.batch_size = batch_size
        self.seed = seed
        self.random_flip = random_flip
        self._epoch_starts = [0]  # first batch number of each epoch computed so far
        self._layout_epoch = -1
        self._layout: list[list[int]] = []  # the batches of one epoch, as in-epoch slot offsets
        self._indices: list[int] = []  # dataset index of each in-epoch slot offset

    @property
    def samples_per_epoch(self) -> int:
        return len(self.slots) * (2 if self.reg_pool else 1)

    def _slot_indices(self, epoch: int) -> list[int]:
        """The dataset index behind each slot of the epoch's shuffle, in shuffled order."""
        order = list(range(self.samples_per_epoch))
        random.Random(f"order:{self.seed}:{epoch}").shuffle(order)
        indices = []
        for slot in order:
            if slot < len(self.slots):
                indices.append(self.slots[slot])
            else:
                walked = epoch * len(self.slots) + slot - len(self.slots)
                indices.append(self.reg_pool[walked % len(self.reg_pool)])
        return indices

    def _epoch_layout(self, epoch: int) -> list[list[int]]:
        if epoch != self._layout_epoch:
            indices = self._slot_indices(epoch)
            groups: dict[tuple[int, int], list[int]] = {}
            for offset, index in enumerate(indices):
                groups.setdefault(self.buckets[index], []).append(offset)
            batches = [group[i:i + self.batch_size] for group in groups.values()
                       for i in range(0, len(group), self.batch_size)]
            batches.sort(key=lambda batch: batch[0])
            self._layout_epoch, self._layout, self._indices = epoch, batches, indices
        return self._layout

    def batches_in_epoch(self, epoch: int) -> int:
        return len(self._epoch_layout(epoch))

    def _locate(self, number: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of a batch number."""
        starts = self._epoch_starts
        while starts[-1] <= number:  # extend the table of epoch starts as far as needed
            starts.append(starts[-1] + self.batches_in_epoch(len(starts) - 1))
        epoch = bisect.bisect_right(starts, number) - 1
        return epoch, number - starts[epoch]

    def epoch_of_batch(self, number: int) -> int:
        return self._locate(number)[0]

    def batch(self, number: int) -> list[Sample]:
        epoch, k = self._locate(number)
        offsets = self._epoch_layout(epoch)[k]
        first = epoch * self.samples_per_epoch
        return [Sample(self._indices[o], self.flip_at(first + o), first + o, epoch)
                for o in offsets]

    def flip_at(self, position: int) -> bool:
        return self.random_flip and random.Random(f"flip:{self.seed}:{position}").random() < 0.5

    def first_sample(self, index: int, epoch: int) -> Sample | None:
        """The first time image `index` is drawn in `epoch` (what "what the model sees"
        shows), or None when the epoch does not hold it."""
        self._epoch_layout(epoch)
        first = epoch * self.samples_per_epoch
        for batch in self._layout:
            for offset in batch:
                if self._indices[offset] == index:
                    return Sample(index, self.flip_at(first + offset), first + offset, epoch)
        return None
