"""Validation: held-out images (kohya's validation_split) or a folder of their own, scored at
fixed noise and timesteps, reported as Validation events beside the training loss."""

from __future__ import annotations

import pytest
import shutil

import torch
from safetensors.torch import load_file

from lora_studio.core import events as ev
from test_train_loop import dataset, make_config, make_dataset, run  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: 1 thread is steadier


def validations(rec) -> list[tuple[int, float]]:
    return [(e.step, e.loss) for e in rec.of(ev.Validation)]


def test_held_out_images_are_never_trained_and_scored_each_epoch(tiny_model_dir, tmp_path,
                                                                   monkeypatch):
    from lora_studio.core.dataset.order import DataOrder

    drawn = set()
    real = DataOrder.batch

    def spy(self, number):
        samples = real(self, number)
        drawn.update(s.index for s in samples)
        return samples

    monkeypatch.setattr(DataOrder, "batch", spy)
    data = make_dataset(tmp_path / "eight", count=8)
    cfg = make_config(tiny_model_dir, data, tmp_path / "o", dataset={"validation_split": 0.25},
                      train={"steps": 6, "batch_size": 2})  # 6 images: 3 steps an epoch
    rec = run(cfg)
    assert isinstance(rec.terminal, ev.Finished), rec.terminal
    logs = " ".join(e.message for e in rec.of(ev.Log))
    assert "Validation: 2 of the 8 dataset images, held out (validation_split 0.25)" in logs
    assert drawn == set(range(6))  # the held-out images (indices 6 and 7) never trained
    assert [step for step, _ in validations(rec)] == [0, 3, 6]  # start, each epoch's end
    assert all(e.images == 2 for e in rec.of(ev.Validation))


def test_same_weights_give_the_same_validation_loss(tiny_model_dir, dataset, tmp_path,
                                                   monkeypatch):
    """Each validation is computed twice, in the real run (LoRA dropout 0.5, text encoder
    trained): the two values are identical (fixed noise and timesteps, dropout off), and they
    move from step to step as the weights do."""
    import lora_studio.core.train.validation as validation

    pairs = []
    real = validation.validation_loss

    def twice(*args, **kwargs):
        pairs.append((real(*args, **kwargs), real(*args, **kwargs)))
        return pairs[-1][0]

    monkeypatch.setattr(validation, "validation_loss", twice)
    folder = tmp_path / "val"
    shutil.copytree(dataset, folder)
    cfg = make_config(tiny_model_dir, dataset, tmp_path / "o",
                      dataset={"validation_path": str(folder)},
                      lora={"dropout": 0.5, "train_text_encoder": True},
                      train={"steps": 3, "learning_rate": 5e-2, "validate_every_n_steps": 1})
    rec = run(cfg)
    assert isinstance(rec.terminal, ev.Finished), rec.terminal
    assert [step for step, _ in validations(rec)] == [0, 1, 2, 3]
    assert all(a == b for a, b in pairs) and len(pairs) == 4
    assert len({a for a, _ in pairs}) == 4 and all(torch.isfinite(torch.tensor(pairs)).flatten())


def test_validating_changes_nothing_in_the_trained_lora(tiny_model_dir, dataset, tmp_path):
    settings = dict(train={"steps": 4, "batch_size": 2}, lora={"dropout": 0.1},
                    dataset={"random_flip": True})
    plain = make_config(tiny_model_dir, dataset, tmp_path / "a", **settings)
    run(plain)
    settings["dataset"] = {"random_flip": True, "validation_path": str(dataset)}
    settings["train"] = {"steps": 4, "batch_size": 2, "validate_every_n_steps": 1}
    validated = make_config(tiny_model_dir, dataset, tmp_path / "b", **settings)
    assert len(validations(run(validated))) == 5
    a, b = load_file(str(plain.lora_path)), load_file(str(validated.lora_path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
