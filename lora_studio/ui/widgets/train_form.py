"""The training settings form, generated from the fields of `TrainConfig` (`config_fields`).

Every field of `config.py` gets an editor (its label, tooltip, range and choices come from the
field's metadata), placed in its group; the `advanced` ones sit behind the "Advanced settings"
expander, closed at first. A field added to `config.py` shows up here without editing this file;
the few fields the form does not edit are listed in `NOT_IN_FORM` with the reason.

The form edits a *base config* (the shipped quickstart preset, or the last preset loaded) and
keeps what it has no editor for, so loading a preset and saving it again writes the same
settings back. `to_config()` returns the config the form describes (not yet validated: the
caller validates, and `label_for(key)` turns a `ConfigError`'s key into the field's name).

Defaults follow the base model (`set_base_model(spec, label, arch)`, `core/train/presets.py`):
every setting of the architecture's defaults that the person has not changed takes the new
architecture's value; a value they typed stays. Nothing here imports torch.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QGroupBox, QLabel, QVBoxLayout, QWidget

from lora_studio.core.errors import ConfigError
from lora_studio.core.paths import path_key, sample_dataset_dir, user_data_dir
from lora_studio.core.train.config import GROUPS, TrainConfig
from lora_studio.core.train.presets import (
    ARCH_KEYS,
    TINY,
    defaults_for,
    get_value,
    quickstart_config,
    set_value,
)
from lora_studio.ui.base_model import TINY_MODEL_LABEL, normal_spec
from lora_studio.ui.widgets.config_fields import FieldEditor, config_fields, make_editor
from lora_studio.ui.widgets.form_layout import AdvancedExpander, group_box, label_width

NO_DATASET = "Open a dataset in the Dataset tab first."

# Config fields without an editor here, and why.
NOT_IN_FORM = {
    "schema_version": "written by the app, not a setting",
    "model.base": "the window's base model picker (shown at the top of the form)",
    "dataset.path": "the Dataset tab's folder (shown at the top of the form)",
    "dataset.subsets": "the Dataset tab's folders and repeats",
    "dataset.caption_extension": "the Dataset tab reads the captions",
    "dataset.default_caption": "the Dataset tab's default caption",
    "dataset.trigger_word": "the Dataset tab's trigger word",
}
# The on-screen name of every config key ("Learning rate"), for messages naming a setting.
FIELD_LABELS = {spec.key: spec.label for spec in config_fields()}
# The editors' input widgets under the names the tab, the screenshot and the tests use.
WIDGET_NAMES = {
    "rank_spin": "lora.rank", "alpha_spin": "lora.alpha", "targets_combo": "lora.targets",
    "text_encoder_check": "lora.train_text_encoder", "steps_spin": "train.steps",
    "lr_edit": "train.learning_rate", "batch_spin": "train.batch_size",
    "resolution_spin": "dataset.resolution", "scheduler_combo": "train.lr_scheduler",
    "precision_combo": "train.mixed_precision", "flip_check": "dataset.random_flip",
    "preserve_spin": "train.preserve_base", "reg_edit": "dataset.reg_path",
    "prior_spin": "train.prior_loss_weight", "sample_every_spin": "sample.every",
    "sample_steps_spin": "sample.steps", "prompts_edit": "sample.prompts",
    "output_edit": "output.path", "name_edit": "output.name", "format_combo": "output.format",
    "epochs_spin": "train.max_train_epochs", "bucket_check": "dataset.enable_bucket",
}

# Settings of the quickstart preset measured for its own sample dataset only: the shipped
# regularization pictures (Tiny Shapes scenes), their loss weight (3, where kohya's default is 1)
# and the timestep range. The form applies them when the shipped sample is the dataset and
# keeps the engine defaults for any other.
SAMPLE_RANGE = ("train.min_timestep", "train.max_timestep")
SAMPLE_ONLY = ("dataset.reg_path", "train.prior_loss_weight") + SAMPLE_RANGE


def default_config(preset: TrainConfig | None = None) -> TrainConfig:
    """The quickstart preset's settings, without its dataset, prompts and output folder (the
    dataset comes from the Dataset tab, the prompt from its trigger word) and without its
    sample-only settings (`SAMPLE_ONLY`)."""
    cfg = copy.deepcopy(preset) if preset is not None else quickstart_config()
    cfg.dataset.path = cfg.dataset.default_caption = cfg.dataset.trigger_word = ""
    cfg.dataset.subsets = []
    cfg.sample.prompts = []
    cfg.output.path = ""
    cfg.output.name = "my_lora"
    engine = TrainConfig()
    for key in SAMPLE_ONLY:
        set_value(cfg, key, get_value(engine, key))
    return cfg


def is_shipped_sample(path: str | Path | None) -> bool:
    return _same_folder(str(path or ""), str(sample_dataset_dir()))


def _same_folder(a: str, b: str) -> bool:
    if not a or not b:
        return not a and not b
    return path_key(a) == path_key(b)


def default_output_dir(name: str) -> Path:
    """Where a LoRA goes when the output folder is left empty: one folder per LoRA name."""
    return user_data_dir() / "loras" / (name or "my_lora")


class TrainForm(QWidget):
    """The settings form. `set_config(cfg)` shows a config; `to_config()` reads it back."""

    setting_changed = Signal(str)  # the key a person or the form changed ("*": many at once)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("TrainForm")
        self.editors: dict[str, FieldEditor] = {}
        preset = quickstart_config()
        self._base = default_config(preset)
        self._sample_recipe = preset  # its SAMPLE_ONLY keys, for the shipped sample
        self._dataset_path = ""
        self._subsets: list[dict[str, Any]] = []
        self._dataset_captions = ("", "")  # (default caption, trigger word) of that dataset
        self._auto_prompts = ""  # the prompt text the form filled in itself (the trigger word)
        self._base_spec = ""
        self._arch = TINY
        self._cuda = False  # until the device probe says otherwise (no fp16 on a CPU)
        self._defaults = defaults_for(TINY)  # the architecture defaults applied last
        self._edited: set[str] = set()  # keys the person changed since
        self._quiet = 0  # > 0 while the form itself sets values
        self._build()
        self._last_rank = self.rank_spin.value()
        self.set_config(self._base)

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.dataset_label = QLabel(NO_DATASET)
        self.dataset_label.setWordWrap(True)
        self.base_label = QLabel(TINY_MODEL_LABEL)  # the window's choice (top right)
        self.base_label.setWordWrap(True)
        self.base_label.setTextFormat(Qt.RichText)
        self.dataset_label.setToolTip(_tip("dataset.path"))
        self.base_label.setToolTip(_tip("model.base"))
        specs = [s for s in config_fields() if s.key not in NOT_IN_FORM]
        for spec in specs:
            editor = make_editor(spec)
            editor.on_change(lambda key=spec.key: self._on_change(key))
            self.editors[spec.key] = editor
        for attr, key in WIDGET_NAMES.items():
            setattr(self, attr, self.editors[key].input)
        self.reg_browse = self.editors["dataset.reg_path"].browse
        self.output_browse = self.editors["output.path"].browse

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        info = [("Dataset", self.dataset_label, _tip("dataset.path")),
                ("Base model", self.base_label, _tip("model.base"))]
        self.advanced = AdvancedExpander("Advanced settings")
        # the groups of config.GROUPS first, in that order; a group it lacks after them
        groups = list(dict.fromkeys([*GROUPS, *(spec.group for spec in specs)]))
        width = label_width(self, specs)
        for group in groups:
            basic = [self.editors[s.key] for s in specs if s.group == group and not s.advanced]
            extra = [self.editors[s.key] for s in specs if s.group == group and s.advanced]
            if basic or group == GROUPS[0]:
                layout.addWidget(group_box(group, basic, info if group == GROUPS[0] else (),
                                           width))
            if extra:
                self.advanced.add(group_box(group, extra, (), width))
        layout.addWidget(self.advanced)

    # ------------------------------------------------------------------ config ↔ widgets
    def set_config(self, cfg: TrainConfig, arch: str | None = None,
                   edited: set[str] | None = None) -> None:
        """Show `cfg` (it becomes the base whose other keys `to_config` keeps). A config without
        a dataset keeps the dataset the form has. Values that differ from the architecture's
        defaults count as the person's (they stay when the base model changes), unless
        `edited` says which keys are; `arch` names the architecture they were the defaults of."""
        self._base = copy.deepcopy(cfg)
        if arch is not None:
            self._arch, self._defaults = arch, defaults_for(arch, self._cuda)
        with self._setting():
            for key, editor in self.editors.items():
                editor.set_value(get_value(cfg, key))
            self._last_rank = cfg.lora.rank
        self._auto_prompts = ""
        self._edited = set(edited) if edited is not None else {
            key for key in ARCH_KEYS if get_value(cfg, key) != self._defaults[key]}
        self._update_output_placeholder()
        if cfg.dataset.path or cfg.dataset.subsets:
            self.set_dataset(cfg.dataset.path or None, cfg.dataset.default_caption,
                             trigger=cfg.dataset.trigger_word, subsets=cfg.dataset.subsets)
        else:
            self._apply_sample_recipe()
            if not cfg.sample.prompts:
                self._fill_auto_prompts()
        self.setting_changed.emit("*")

    def to_config(self, strict: bool = True) -> TrainConfig:
        """The config the form describes (a copy of the base with the form's values); raises
        ConfigError for a value that does not parse (e.g. the learning rate text), or with
        `strict=False` keeps the base's value of that key."""
        cfg = copy.deepcopy(self._base)
        for key, editor in self.editors.items():
            try:
                set_value(cfg, key, editor.value())
            except ConfigError:
                if strict:
                    raise
        cfg.dataset.path = "" if self._subsets else self._dataset_path
        cfg.dataset.subsets = copy.deepcopy(self._subsets)
        if self._dataset_path or self._subsets:
            cfg.dataset.default_caption, cfg.dataset.trigger_word = self._dataset_captions
        cfg.model.base = self._base_spec
        cfg.output.name = cfg.output.name.strip()
        if not cfg.output.path:
            cfg.output.path = str(default_output_dir(cfg.output.name))
        return cfg

    def apply_values(self, values: dict[str, Any]) -> None:
        """Set several settings as the person's own choice (e.g. the advisor's Apply): each
        shown field takes its value; a key the form does not show goes into the base config."""
        for key, value in values.items():
            editor = self.editors.get(key)
            if editor is not None:
                editor.set_value(value)
            else:
                set_value(self._base, key, value)
                self._edited.add(key)
                self.setting_changed.emit(key)

    def learning_rate(self) -> float:
        return self.editors["train.learning_rate"].value()

    def prompts(self) -> list[str]:
        return self.editors["sample.prompts"].value()

    # ------------------------------------------------------------------ architecture defaults
    @property
    def arch(self) -> str:
        """The architecture whose defaults the form applied last (`presets.TINY`, "sd1"...)."""
        return self._arch

    @property
    def edited_keys(self) -> set[str]:
        """The architecture-default keys the person changed (they keep their values)."""
        return set(self._edited)

    def apply_architecture(self, arch: str) -> None:
        """Give every default the person has not changed `arch`'s value."""
        values = defaults_for(arch, self._cuda)
        with self._setting():
            for key, value in values.items():
                if key not in self._edited:
                    self.editors[key].set_value(value)
            if "lora.rank" in self._edited and "lora.alpha" not in self._edited:
                ratio = values["lora.alpha"] / values["lora.rank"]
                self.alpha_spin.setValue(self.rank_spin.value() * ratio)
            self._last_rank = self.rank_spin.value()
        self._arch, self._defaults = arch, values
        self.setting_changed.emit("*")

    # ------------------------------------------------------------------ dataset
    @property
    def dataset_path(self) -> str:
        """The dataset's folder (for several folders, the folder that holds them)."""
        return self._dataset_path

    @property
    def dataset_subsets(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._subsets)

    def dataset_captions(self) -> tuple[str, str]:
        """(default caption, trigger word) of the dataset."""
        return self._dataset_captions

    def set_dataset(self, path: str | Path | None, default_caption: str = "",
                    trigger: str = "", summary: str = "", first_caption: str = "",
                    subsets: list[dict[str, Any]] | None = None) -> None:
        """The dataset to train on (from the Dataset tab): one folder (a plain or kohya folder),
        or `subsets` ([[dataset.subsets]] tables) found under `path`. An empty prompt list (or
        the one the form filled in itself) becomes the trigger word."""
        self._subsets = copy.deepcopy(list(subsets or []))
        if not path and self._subsets:
            path = Path(self._subsets[0]["path"]).parent
        self._dataset_path = str(path) if path else ""
        self._dataset_captions = (default_caption, trigger or default_caption)
        self._apply_sample_recipe()
        if not self._dataset_path:
            self.dataset_label.setText(NO_DATASET)
            self.dataset_label.setToolTip(_tip("dataset.path"))
        else:
            folders = "\n".join(s["path"] for s in self._subsets) or self._dataset_path
            self.dataset_label.setText(summary or Path(self._dataset_path).name)
            self.dataset_label.setToolTip(f"{folders}\n\n{_tip('dataset.path')}")
        self._fill_auto_prompts(first_caption)
        self.setting_changed.emit("dataset.path")

    def _apply_sample_recipe(self) -> None:
        """The shipped sample trains with the quickstart's reg pictures, their weight and the
        timestep range; another dataset gets the engine's defaults. What a person (or a
        preset) set otherwise stays."""
        on = is_shipped_sample(self._dataset_path) and not self._subsets
        recipe, engine = self._sample_recipe, TrainConfig()
        old, new = (engine, recipe) if on else (recipe, engine)
        with self._setting():
            reg = self.reg_edit.text().strip()
            if _same_folder(reg, old.dataset.reg_path) or (on and not reg):
                self.reg_edit.setText(new.dataset.reg_path)
            if self.prior_spin.value() == old.train.prior_loss_weight:
                self.prior_spin.setValue(new.train.prior_loss_weight)
            timesteps = [self.editors[key] for key in SAMPLE_RANGE]
            if [e.value() for e in timesteps] == [get_value(old, k) for k in SAMPLE_RANGE]:
                for editor, key in zip(timesteps, SAMPLE_RANGE):
                    editor.set_value(get_value(new, key))

    def _fill_auto_prompts(self, first_caption: str = "") -> None:
        current = self.prompts_edit.toPlainText().strip()
        if current and current != self._auto_prompts:
            return  # the user's own prompts stay
        prompt = self._dataset_captions[1] or first_caption
        with self._setting():
            self.prompts_edit.setPlainText(prompt)
        self._auto_prompts = prompt

    # ------------------------------------------------------------------ helpers
    def label_for(self, key: str) -> str:
        """The on-screen name of a config key ("Learning rate"), or "" when it has none.
        "dataset.subsets[2].path" is named as "dataset.subsets"."""
        return FIELD_LABELS.get(key.split("[")[0], "")

    def widget_for(self, key: str) -> QWidget | None:
        """The widget that edits (or shows) `key`, or None."""
        shown = {"dataset.path": self.dataset_label, "dataset.subsets": self.dataset_label,
                 "model.base": self.base_label}
        key = key.split("[")[0]
        editor = self.editors.get(key)
        return editor.input if editor is not None else shown.get(key)

    def focus_field(self, key: str) -> None:
        """Focus the widget of `key` (opening the Advanced settings when it is there)."""
        widget = self.widget_for(key)
        if widget is None:
            return
        if self.advanced.isAncestorOf(widget):
            self.advanced.set_open(True)
        if widget.isEnabled():
            widget.setFocus(Qt.OtherFocusReason)

    def set_base_model(self, spec: str | None, label: str, arch: str | None = None) -> None:
        """Show (and train on) the window's base model; `label` is its short name and `arch`
        its architecture ("sd1", "sd2", "sd2-v", "sdxl"; None: not known yet). The built-in
        model has the quickstart recipe; with an architecture, the defaults follow it."""
        self._base_spec = spec or ""
        self.base_label.setText(f"{label}  <span style='color:#9aa0a6'>(change it at the top "
                                "right)</span>")
        self.base_label.setToolTip(f"{spec or 'The built-in tiny model'}\n\n{_tip('model.base')}")
        target = TINY if normal_spec(spec) is None else arch
        if target is not None and target != self._arch:
            self.apply_architecture(target)

    def set_cuda(self, available: bool) -> None:
        """Whether a CUDA GPU trains (the device probe's answer): mixed precision defaults to
        fp16 / bf16 with one, "no" without."""
        if available != self._cuda:
            self._cuda = available
            self.apply_architecture(self._arch)

    def set_editable(self, editable: bool) -> None:
        """Lock the settings while a run uses them."""
        for box in self.findChildren(QGroupBox):
            box.setEnabled(editable)

    @contextmanager
    def _setting(self):
        """The form sets values: they are not the person's edits."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def _on_change(self, key: str) -> None:
        if key == "lora.rank":
            self._rank_changed(self.rank_spin.value())
        elif key == "output.name":
            self._update_output_placeholder()
        if self._quiet:
            return
        self._edited.add(key)
        if key == "sample.prompts":
            self._auto_prompts = ""
        self.setting_changed.emit(key)

    def _rank_changed(self, rank: int) -> None:
        """Alpha keeps its ratio to the rank unless the person set it (alpha = rank stays so)."""
        last, alpha = self._last_rank, self.alpha_spin.value()
        self._last_rank = rank
        if self._quiet or not last:
            return
        if "lora.alpha" not in self._edited or alpha == last:
            with self._setting():
                self.alpha_spin.setValue(alpha * rank / last)

    def _update_output_placeholder(self) -> None:
        self.output_edit.setPlaceholderText(str(default_output_dir(self.name_edit.text().strip())))


def _tip(key: str) -> str:
    from lora_studio.core.train.config import describe_keys

    return f"{describe_keys().get(key, '')}\n[{key}]".strip()


__all__ = ["TrainForm", "default_config", "default_output_dir", "FIELD_LABELS", "NOT_IN_FORM",
           "TINY_MODEL_LABEL"]
