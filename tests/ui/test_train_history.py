"""Train tab History: the runs the studio started, read back from their events.jsonl (written by
hand here, no torch), each with its curve, previews and log; Resume only for a run that wrote a
complete checkpoint, going through the resume job factory with that checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from lora_studio.core import events as ev
from lora_studio.core.train.config import save_config
from lora_studio.core.train.runs import EVENTS_FILE, remember_run
from lora_studio.ui.tabs.train_tab import TrainTab
from lora_studio.ui.widgets.train_form import default_config
from lora_studio.ui.workers import JobRunner
from test_train_tab import close_dialogs, visible_error_dialogs


def write_run(root: Path, name: str, dataset: Path, *, steps_done: int, total: int = 10,
              end: str | None = None, checkpoint: int | None = None, previews: int = 0) -> Path:
    """A run folder as the trainer leaves it: config, events.jsonl, previews, a checkpoint."""
    folder = root / name
    folder.mkdir(parents=True)
    cfg = default_config()
    cfg.dataset.path, cfg.output.path, cfg.output.name = str(dataset), str(folder), name
    cfg.train.steps, cfg.sample.prompts = total, ["zqstar"]
    save_config(cfg, folder / f"{name}.toml")
    lines = [{"time": 1_700_000_000, "event": "JobStarted", "total_steps": total,
              "message": f"Training {name}"}]
    lines += [{"event": "StepProgress", "step": s, "loss": 1.0 / s, "total_steps": total}
              for s in range(1, steps_done + 1)]
    lines += [{"event": "Validation", "step": s, "loss": 0.8 / s} for s in (2, steps_done)]
    lines.append({"event": "Log", "message": f"{name} log line"})
    if end:
        lines.append({"event": end, "message": f"{name} {end.lower()}"})
    (folder / EVENTS_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines))
    if checkpoint is not None:
        ckpt = folder / "checkpoints" / f"step-{checkpoint}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text("{}")
        (ckpt / "lora_state.safetensors").write_bytes(b"")
    for i in range(previews):
        (folder / "samples").mkdir(exist_ok=True)
        Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(
            folder / "samples" / f"step-{(i + 1) * 2:06d}-0.png")
    remember_run(folder)
    return folder


class ResumeFactory:
    """Records (config, checkpoint) and runs a short scripted job."""

    def __init__(self):
        self.calls = []

    def __call__(self, config, checkpoint):
        self.calls.append((config, checkpoint))

        def job(emit, control):
            emit(ev.JobStarted(kind="train", total_steps=config.train.steps))
            emit(ev.StepProgress(step=config.train.steps, total_steps=config.train.steps,
                                 loss=0.1, lr=1e-4, it_per_s=5.0, eta_s=0.0))
            emit(ev.Finished(message="Training finished: LoRA saved."))

        return job


def make_tab(qtbot, settings, **kwargs) -> TrainTab:
    runner = JobRunner()
    tab = TrainTab(runner, settings, **kwargs)
    tab._test_runner = runner
    qtbot.addWidget(tab)
    return tab


def test_history_lists_runs_with_curve_previews_log_and_resume_only_with_a_checkpoint(
        qtbot, settings, dataset_dir, tmp_path):
    runs = tmp_path / "runs"
    done = write_run(runs, "done", dataset_dir, steps_done=10, end="Finished", previews=6)
    killed = write_run(runs, "killed", dataset_dir, steps_done=3)  # no checkpoint
    cancelled = write_run(runs, "cancelled", dataset_dir, steps_done=5, end="Cancelled",
                          checkpoint=4)
    tab = make_tab(qtbot, settings)
    history = tab.history
    lines = history.lines()
    assert [line.split(" · ")[:3] for line in lines] == [
        ["cancelled", "cancelled", "5 / 10 steps"],
        ["killed", "running or interrupted", "3 / 10 steps"],
        ["done", "finished", "10 / 10 steps"]]  # newest first
    history.select(done)
    assert history.loss_plot.curve_data()[0] == list(range(1, 11))
    assert history.thumbnail_count() == 4  # the last four previews
    assert "done log line" in history.log_view.toPlainText()
    assert history.resume_button.isHidden()  # finished
    history.select(killed)
    assert history.resume_button.isHidden()  # interrupted, but no checkpoint
    history.select(cancelled)
    assert not history.resume_button.isHidden()
    assert "step-4" in history.title_label.text()


def test_resume_starts_the_run_from_its_checkpoint_and_the_history_refreshes(
        qtbot, settings, dataset_dir, tmp_path):
    folder = write_run(tmp_path / "runs", "stopped", dataset_dir, steps_done=5, total=8,
                       end="Cancelled", checkpoint=4)
    factory = ResumeFactory()
    tab = make_tab(qtbot, settings, resume_job_factory=factory)
    tab.history.select(folder)
    with qtbot.waitSignal(tab.run.ended, timeout=5000):
        tab.history.resume_button.click()
    (config, checkpoint), = factory.calls
    assert checkpoint == folder / "checkpoints" / "step-4"
    assert config.output.name == "stopped" and config.train.steps == 8
    assert "Resuming from" in tab.log_view.toPlainText()
    assert tab.side_tabs.currentWidget() is tab.run_view  # the resumed run is shown
    # the fake job wrote no events: the refreshed history still reads the folder as it was
    assert tab.history.lines()[0].startswith("stopped · cancelled")


def test_resume_without_a_checkpoint_says_why(qtbot, settings, dataset_dir, tmp_path):
    folder = write_run(tmp_path / "runs", "nockpt", dataset_dir, steps_done=2, end="Cancelled")
    factory = ResumeFactory()
    tab = make_tab(qtbot, settings, resume_job_factory=factory)
    assert not tab.resume_run(folder)
    assert not factory.calls
    dialogs = visible_error_dialogs()
    assert dialogs and "cannot be resumed" in dialogs[-1].message_label.text()
    close_dialogs()
