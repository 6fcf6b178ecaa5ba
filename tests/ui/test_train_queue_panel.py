"""Train tab Queue: runs added with the current settings (and rank variations), run one after
another through the tab's start path with scripted jobs (no torch), each outcome recorded, and
the queue still there after the tab (the app) is closed and opened again."""

from __future__ import annotations

from lora_studio.core import events as ev
from lora_studio.core.train.queue import RunQueue
from lora_studio.ui.tabs.train_tab import TrainTab
from lora_studio.ui.workers import JobRunner
from test_train_tab import close_dialogs, visible_error_dialogs


class ScriptedJobs:
    """A job factory: each job records its run's name and ends as `endings` says."""

    def __init__(self, endings=None):
        self.started = []
        self.endings = endings or {}

    def __call__(self, config):
        name = config.output.name

        def job(emit, control):
            self.started.append(name)
            emit(ev.JobStarted(kind="train", total_steps=config.train.steps))
            emit(ev.StepProgress(step=1, total_steps=config.train.steps, loss=0.5, lr=1e-4,
                                 it_per_s=5.0, eta_s=0.0))
            if self.endings.get(name) == "fail":
                emit(ev.Failed(message=f"{name} ran out of memory."))
                return None
            emit(ev.Finished(message=f"{name}: LoRA saved."))
            return None

        return job


def make_tab(qtbot, settings, dataset_dir, jobs=None) -> TrainTab:
    runner = JobRunner()
    tab = TrainTab(runner, settings, job_factory=jobs or ScriptedJobs())
    tab._test_runner = runner
    qtbot.addWidget(tab)
    tab.set_dataset(dataset_dir, "zqstar")
    tab.form.steps_spin.setValue(4)
    return tab


def queue_named(tab, *names) -> None:
    for name in names:
        tab.form.name_edit.setText(name)
        assert tab.queue_panel.add_current()


def test_the_queue_runs_its_entries_in_order_and_lists_each_outcome(qtbot, settings,
                                                                    dataset_dir):
    jobs = ScriptedJobs({"second": "fail"})
    tab = make_tab(qtbot, settings, dataset_dir, jobs)
    queue_named(tab, "first", "second")
    panel = tab.queue_panel
    assert [row[:2] for row in panel.rows()] == [("first", "waiting"), ("second", "waiting")]
    assert panel.run_button.isEnabled() and panel.run_button.text() == "Run queue"
    panel.run_button.click()
    assert panel.run_button.text() == "Stop queue"
    qtbot.waitUntil(lambda: not tab.queue.running and not tab.run.is_active, timeout=10_000)
    assert jobs.started == ["first", "second"]  # one after another, in order
    assert panel.rows() == [("first", "finished", "first: LoRA saved."),
                            ("second", "failed", "second ran out of memory.")]
    assert panel.run_button.text() == "Run queue" and not panel.run_button.isEnabled()
    assert [r.status for r in RunQueue().runs] == ["finished", "failed"]  # saved
    close_dialogs()  # the failed run opened its error


def test_rank_variations_and_remove(qtbot, settings, dataset_dir):
    tab = make_tab(qtbot, settings, dataset_dir)
    tab.form.name_edit.setText("stars")
    assert tab.queue_panel.add_rank_variations()
    runs = tab.queue.runs
    assert [r.config().lora.rank for r in runs] == [8, 16, 32]
    assert [r.config().output.name for r in runs] == ["stars-r8", "stars-r16", "stars-r32"]
    panel = tab.queue_panel
    assert not panel.remove_button.isEnabled()
    panel.list.topLevelItem(1).setSelected(True)
    panel.remove_button.click()
    assert [r.config().lora.rank for r in tab.queue.runs] == [8, 32]


def test_an_invalid_setting_is_not_queued(qtbot, settings, dataset_dir):
    tab = make_tab(qtbot, settings, dataset_dir)
    tab.set_dataset(None)
    assert not tab.queue_panel.add_current()
    assert tab.queue.runs == []
    assert visible_error_dialogs()
    close_dialogs()


def test_the_queue_survives_a_restart(qtbot, settings, dataset_dir):
    tab = make_tab(qtbot, settings, dataset_dir)
    queue_named(tab, "alpha", "beta")
    tab.close()
    tab.deleteLater()
    del tab
    again = make_tab(qtbot, settings, dataset_dir)
    assert [row[:2] for row in again.queue_panel.rows()] == [("alpha", "waiting"),
                                                             ("beta", "waiting")]
    assert again.queue_panel.run_button.isEnabled()
