"""The training settings form: the keys of `TrainConfig` a person changes, one widget each.

The form edits a *base config* (the shipped quickstart preset, or the last preset loaded) and
keeps every key it shows no widget for (warm-up, Min-SNR, seeds, checkpoints...), so loading a
preset and saving it again writes the same settings back. Every widget's tooltip is the key's help
text from `describe_keys()`, followed by the TOML key it sets.

`to_config()` returns the config the form describes (not yet validated: the caller validates, and
`label_for(key)` turns a `ConfigError`'s key into the field's name on screen). Nothing here
imports torch: the form is on the app's start-up path.
"""

from __future__ import annotations

import copy
import math
import tomllib
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from lora_studio.ui.base_model import TINY_MODEL_LABEL
from lora_studio.core.errors import ConfigError
from lora_studio.core.paths import path_key, resources_dir, sample_dataset_dir, user_data_dir
from lora_studio.core.train.config import (
    LR_SCHEDULERS,
    MIXED_PRECISIONS,
    TARGET_PRESETS,
    TrainConfig,
    config_from_dict,
    describe_keys,
)

QUICKSTART = "quickstart.toml"
NO_DATASET = "Open a dataset in the Dataset tab first."

# The name each key has on screen (for error messages: "Learning rate (train.learning_rate)").
FIELD_LABELS = {
    "dataset.path": "Dataset",
    "dataset.default_caption": "Dataset",
    "dataset.reg_path": "Reg images",
    "train.prior_loss_weight": "Reg weight",
    "model.base": "Base model",
    "lora.rank": "Rank",
    "lora.alpha": "Alpha",
    "lora.targets": "Targets",
    "lora.train_text_encoder": "Train text encoder",
    "train.steps": "Steps",
    "train.learning_rate": "Learning rate",
    "train.batch_size": "Batch size",
    "dataset.resolution": "Resolution",
    "train.lr_scheduler": "LR schedule",
    "train.mixed_precision": "Precision",
    "dataset.random_flip": "Mirror images",
    "sample.every": "Preview every",
    "sample.steps": "Preview steps",
    "sample.prompts": "Preview prompts",
    "output.path": "Output folder",
    "output.name": "LoRA name",
    "output.format": "Format",
}


# Settings of the quickstart preset measured for its own sample dataset only: the shipped
# regularization pictures (Tiny Shapes scenes), their loss weight (3, where kohya's default is 1)
# and the timestep range. The form applies them when the shipped sample is the dataset and
# keeps the engine defaults for any other.
SAMPLE_RANGE = (("train", "min_timestep"), ("train", "max_timestep"))
SAMPLE_ONLY = (("dataset", "reg_path"), ("train", "prior_loss_weight")) + SAMPLE_RANGE


def quickstart_config() -> TrainConfig:
    """The shipped quickstart preset, parsed (engine defaults for a broken install)."""
    path = resources_dir() / "presets" / QUICKSTART
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return config_from_dict(data, base_dir=path.parent, validate=False)
    except (OSError, tomllib.TOMLDecodeError, ConfigError):
        return TrainConfig()


def default_config(preset: TrainConfig | None = None) -> TrainConfig:
    """The quickstart preset's settings, without its dataset, prompts and output folder (the
    dataset comes from the Dataset tab, the prompt from its trigger word) and without its
    sample-only settings (`SAMPLE_ONLY`)."""
    cfg = copy.deepcopy(preset) if preset is not None else quickstart_config()
    cfg.dataset.path = cfg.dataset.default_caption = cfg.dataset.trigger_word = ""
    cfg.sample.prompts = []
    cfg.output.path = ""
    cfg.output.name = "my_lora"
    _copy_keys(TrainConfig(), cfg, SAMPLE_ONLY)
    return cfg


def is_shipped_sample(path: str | Path | None) -> bool:
    return _same_folder(str(path or ""), str(sample_dataset_dir()))


def _same_folder(a: str, b: str) -> bool:
    if not a or not b:
        return not a and not b
    return path_key(a) == path_key(b)


def _copy_keys(source: TrainConfig, target: TrainConfig, keys) -> None:
    for section, key in keys:
        setattr(getattr(target, section), key, getattr(getattr(source, section), key))


def default_output_dir(name: str) -> Path:
    """Where a LoRA goes when the output folder is left empty: one folder per LoRA name."""
    return user_data_dir() / "loras" / (name or "my_lora")


class TrainForm(QWidget):
    """The settings form. `set_config(cfg)` shows a config; `to_config()` reads it back."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("TrainForm")
        self._help = describe_keys()
        self._widgets: dict[str, QWidget] = {}
        preset = quickstart_config()
        self._base = default_config(preset)
        self._sample_recipe = preset  # its SAMPLE_ONLY keys, for the shipped sample
        self._dataset_path = ""
        self._dataset_captions = ("", "")  # (default caption, trigger word) of that dataset
        self._auto_prompts = ""  # the prompt text the form filled in itself (the trigger word)
        self._build()
        self.set_config(self._base)

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.dataset_label = QLabel(NO_DATASET)
        self.dataset_label.setWordWrap(True)
        # The base model is the window's shared choice (the picker at the top right).
        self.base_label = QLabel(TINY_MODEL_LABEL)
        self.base_label.setWordWrap(True)
        self.base_label.setTextFormat(Qt.RichText)
        self._base_spec = ""

        # kohya's regularization folder: optional pictures of what the LoRA should leave alone
        self.reg_edit = QLineEdit()
        self.reg_edit.setPlaceholderText("none (optional)")
        self.reg_browse = QPushButton("Browse…")
        self.reg_browse.clicked.connect(self._browse_reg)
        self.prior_spin = QDoubleSpinBox()
        self.prior_spin.setRange(0.0, 10.0)
        self.prior_spin.setSingleStep(0.25)
        self.prior_spin.setDecimals(2)
        self.prior_spin.setAlignment(Qt.AlignRight)

        self.rank_spin = _spin(1, 1024)
        self.alpha_spin = QDoubleSpinBox()
        self.alpha_spin.setRange(0.01, 4096.0)
        self.alpha_spin.setDecimals(2)
        self.alpha_spin.setAlignment(Qt.AlignRight)
        self.alpha_spin.setMinimumWidth(84)
        self.rank_spin.valueChanged.connect(self._rank_changed)
        self._last_rank = self.rank_spin.value()
        self.targets_combo = _combo([(name, name) for name in TARGET_PRESETS])
        self.text_encoder_check = QCheckBox("Text encoder too")

        self.steps_spin = _spin(1, 10_000_000)
        self.lr_edit = QLineEdit()
        self.lr_edit.setAlignment(Qt.AlignRight)
        self.lr_edit.setPlaceholderText("1e-4")
        self.batch_spin = _spin(1, 1024)
        self.resolution_spin = _spin(8, 4096, step=64)
        self.scheduler_combo = _combo([(name.replace("_", " "), name) for name in LR_SCHEDULERS])
        self.precision_combo = _combo([("fp32 (no)" if p == "no" else p, p)
                                       for p in MIXED_PRECISIONS])
        self.flip_check = QCheckBox("Mirror images")
        self.preserve_spin = QDoubleSpinBox()
        self.preserve_spin.setRange(0.0, 10.0)
        self.preserve_spin.setSingleStep(0.5)
        self.preserve_spin.setDecimals(2)
        self.preserve_spin.setSpecialValueText("off")
        self.preserve_spin.setAlignment(Qt.AlignRight)

        self.sample_every_spin = _spin(0, 10_000_000)
        self.sample_every_spin.setSpecialValueText("off")
        self.sample_every_spin.setSuffix(" steps")
        self.sample_steps_spin = _spin(1, 1000)
        self.prompts_edit = QPlainTextEdit()
        self.prompts_edit.setPlaceholderText("One prompt per line (default: the trigger word)")
        self.prompts_edit.setTabChangesFocus(True)
        self.prompts_edit.setFixedHeight(self.fontMetrics().lineSpacing() * 2 + 16)

        self.output_edit = QLineEdit()
        self.output_browse = QPushButton("Browse…")
        self.output_browse.clicked.connect(self._browse_output)
        self.name_edit = QLineEdit()
        self.name_edit.textChanged.connect(self._update_output_placeholder)
        self.format_combo = _combo([("kohya", "kohya"), ("diffusers", "diffusers")])

        data = self._group("Model and data", [
            ("Dataset", "dataset.path", self.dataset_label),
            ("Base model", "model.base", self.base_label),
            ("Reg images", "dataset.reg_path", _row(self.reg_edit, self.reg_browse)),
        ])
        lora = self._group("LoRA", [
            ("Rank", "lora.rank", _pair(self.rank_spin, "Alpha", self.alpha_spin,
                                        self._tip("lora.alpha"))),
            ("Targets", "lora.targets", _row(self.targets_combo, self.text_encoder_check)),
        ])
        training = self._group("Training", [
            ("Steps", "train.steps", _pair(self.steps_spin, "Batch", self.batch_spin,
                                           self._tip("train.batch_size"))),
            ("Learning rate", "train.learning_rate",
             _pair(self.lr_edit, "Resolution", self.resolution_spin,
                   self._tip("dataset.resolution"))),
            ("LR schedule", "train.lr_scheduler", self.scheduler_combo),
            ("Precision", "train.mixed_precision", _row(self.precision_combo, self.flip_check)),
            ("Keep base", "train.preserve_base",
             _pair(self.preserve_spin, "Reg weight", self.prior_spin,
                   self._tip("train.prior_loss_weight"))),
        ])
        previews = self._group("Previews", [
            ("Preview every", "sample.every", _pair(self.sample_every_spin, "Steps",
                                                    self.sample_steps_spin,
                                                    self._tip("sample.steps"))),
            ("Prompts", "sample.prompts", self.prompts_edit),
        ])
        output = self._group("Output", [
            ("Folder", "output.path", _row(self.output_edit, self.output_browse)),
            ("LoRA name", "output.name", _pair(self.name_edit, "Format", self.format_combo,
                                               self._tip("output.format"))),
        ])
        self._widgets.update({
            "lora.alpha": self.alpha_spin, "train.batch_size": self.batch_spin,
            "sample.steps": self.sample_steps_spin, "model.base": self.base_label,
            "dataset.reg_path": self.reg_edit, "train.prior_loss_weight": self.prior_spin,
            "train.preserve_base": self.preserve_spin, "dataset.random_flip": self.flip_check,
            "train.mixed_precision": self.precision_combo,
            "output.path": self.output_edit, "lora.rank": self.rank_spin,
            "train.steps": self.steps_spin, "sample.every": self.sample_every_spin,
            "lora.targets": self.targets_combo, "lora.train_text_encoder":
            self.text_encoder_check, "train.learning_rate": self.lr_edit,
            "dataset.resolution": self.resolution_spin, "output.name": self.name_edit,
            "output.format": self.format_combo})
        for key, widget in self._widgets.items():
            widget.setToolTip(self._tip(key))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        for box in (data, lora, training, previews, output):
            layout.addWidget(box)

    def _group(self, title: str, rows: list[tuple[str, str, QWidget]]) -> QGroupBox:
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignRight | Qt.AlignVCenter)
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        form.setVerticalSpacing(5)
        for label, key, widget in rows:
            tip = self._tip(key)
            widget.setToolTip(tip)
            self._widgets.setdefault(key, widget)
            if label:
                label_widget = QLabel(label)
                label_widget.setToolTip(tip)
                form.addRow(label_widget, widget)
            else:
                form.addRow(widget)
        box = QGroupBox(title)
        box.setLayout(form)
        return box

    def _tip(self, key: str) -> str:
        return f"{self._help.get(key, '')}\n[{key}]".strip()

    # ------------------------------------------------------------------ config ↔ widgets
    def set_config(self, cfg: TrainConfig) -> None:
        """Show `cfg` (it becomes the base whose other keys `to_config` keeps). A config without
        a dataset path keeps the dataset the form has."""
        self._base = copy.deepcopy(cfg)
        self.rank_spin.setValue(cfg.lora.rank)
        self.alpha_spin.setValue(cfg.lora.alpha)
        _select(self.targets_combo, cfg.lora.targets)
        self.text_encoder_check.setChecked(cfg.lora.train_text_encoder)
        self.steps_spin.setValue(cfg.train.steps)
        self.lr_edit.setText(f"{cfg.train.learning_rate:g}")
        self.batch_spin.setValue(cfg.train.batch_size)
        self.resolution_spin.setValue(cfg.dataset.resolution)
        _select(self.scheduler_combo, cfg.train.lr_scheduler)
        _select(self.precision_combo, cfg.train.mixed_precision)
        self.flip_check.setChecked(cfg.dataset.random_flip)
        self.preserve_spin.setValue(cfg.train.preserve_base)
        self.reg_edit.setText(cfg.dataset.reg_path)
        self.prior_spin.setValue(cfg.train.prior_loss_weight)
        self.sample_every_spin.setValue(cfg.sample.every)
        self.sample_steps_spin.setValue(cfg.sample.steps)
        self.prompts_edit.setPlainText("\n".join(cfg.sample.prompts))
        self._auto_prompts = ""
        self.name_edit.setText(cfg.output.name)
        self.output_edit.setText(cfg.output.path)
        _select(self.format_combo, cfg.output.format)
        self._update_output_placeholder()
        if cfg.dataset.path:
            self.set_dataset(cfg.dataset.path, cfg.dataset.default_caption,
                             trigger=cfg.dataset.trigger_word)
        else:
            self._apply_sample_recipe()
            if not cfg.sample.prompts:
                self._fill_auto_prompts()

    def to_config(self) -> TrainConfig:
        """The config the form describes (a copy of the base with the form's values); raises
        ConfigError for a value that does not parse (e.g. the learning rate text)."""
        cfg = copy.deepcopy(self._base)
        cfg.dataset.path = self._dataset_path
        if self._dataset_path:
            cfg.dataset.default_caption, cfg.dataset.trigger_word = self._dataset_captions
        cfg.model.base = self._base_spec
        cfg.lora.rank = self.rank_spin.value()
        cfg.lora.alpha = float(self.alpha_spin.value())
        cfg.lora.targets = self.targets_combo.currentData()
        cfg.lora.train_text_encoder = self.text_encoder_check.isChecked()
        cfg.train.steps = self.steps_spin.value()
        cfg.train.learning_rate = self.learning_rate()
        cfg.train.batch_size = self.batch_spin.value()
        cfg.dataset.resolution = self.resolution_spin.value()
        cfg.train.lr_scheduler = self.scheduler_combo.currentData()
        cfg.train.mixed_precision = self.precision_combo.currentData()
        cfg.dataset.random_flip = self.flip_check.isChecked()
        cfg.train.preserve_base = float(self.preserve_spin.value())
        reg = self.reg_edit.text().strip()
        cfg.dataset.reg_path = str(Path(reg).expanduser().absolute()) if reg else ""
        cfg.train.prior_loss_weight = float(self.prior_spin.value())
        cfg.sample.every = self.sample_every_spin.value()
        cfg.sample.steps = self.sample_steps_spin.value()
        cfg.sample.prompts = self.prompts()
        cfg.output.name = self.name_edit.text().strip()
        folder = self.output_edit.text().strip()
        cfg.output.path = str(Path(folder).expanduser().absolute()) if folder else \
            str(default_output_dir(cfg.output.name))
        cfg.output.format = self.format_combo.currentData()
        return cfg

    def learning_rate(self) -> float:
        text = self.lr_edit.text().strip()
        try:
            value = float(text)
        except ValueError:
            raise ConfigError("train.learning_rate", f"must be a number such as 1e-4 or "
                              f"0.0001, got {text!r}") from None
        if not math.isfinite(value):
            raise ConfigError("train.learning_rate", f"must be a finite number, got {text!r}")
        return value

    def prompts(self) -> list[str]:
        return [line.strip() for line in self.prompts_edit.toPlainText().splitlines()
                if line.strip()]

    # ------------------------------------------------------------------ dataset
    @property
    def dataset_path(self) -> str:
        return self._dataset_path

    def dataset_captions(self) -> tuple[str, str]:
        """(default caption, trigger word) of the dataset."""
        return self._dataset_captions

    def set_dataset(self, path: str | Path | None, default_caption: str = "",
                    trigger: str = "", summary: str = "", first_caption: str = "") -> None:
        """The dataset to train on (from the Dataset tab). An empty prompt list (or the one the
        form filled in itself) becomes the trigger word, so previews show what the LoRA learns."""
        self._dataset_path = str(path) if path else ""
        self._dataset_captions = (default_caption, trigger or default_caption)
        self._apply_sample_recipe()
        if not self._dataset_path:
            self.dataset_label.setText(NO_DATASET)
            self.dataset_label.setToolTip(self._tip("dataset.path"))
        else:
            self.dataset_label.setText(summary or Path(self._dataset_path).name)
            self.dataset_label.setToolTip(f"{self._dataset_path}\n\n{self._tip('dataset.path')}")
        self._fill_auto_prompts(first_caption)

    def _apply_sample_recipe(self) -> None:
        """The shipped sample trains with the quickstart's reg pictures, their weight and the
        timestep range; another dataset gets the engine's defaults. What a person (or a
        preset) set otherwise stays."""
        on = is_shipped_sample(self._dataset_path)
        recipe, engine = self._sample_recipe, TrainConfig()
        old, new = (engine, recipe) if on else (recipe, engine)
        reg = self.reg_edit.text().strip()
        if _same_folder(reg, old.dataset.reg_path) or (on and not reg):
            self.reg_edit.setText(new.dataset.reg_path)
        if self.prior_spin.value() == old.train.prior_loss_weight:
            self.prior_spin.setValue(new.train.prior_loss_weight)
        train = self._base.train
        if (train.min_timestep, train.max_timestep) == (old.train.min_timestep,
                                                        old.train.max_timestep):
            _copy_keys(new, self._base, SAMPLE_RANGE)

    def _fill_auto_prompts(self, first_caption: str = "") -> None:
        current = self.prompts_edit.toPlainText().strip()
        if current and current != self._auto_prompts:
            return  # the user's own prompts stay
        prompt = self._dataset_captions[1] or first_caption
        self.prompts_edit.setPlainText(prompt)
        self._auto_prompts = prompt

    # ------------------------------------------------------------------ helpers
    def label_for(self, key: str) -> str:
        """The on-screen name of a config key ("Learning rate"), or "" when it has no field."""
        return FIELD_LABELS.get(key, "")

    def focus_field(self, key: str) -> None:
        widget = self._widgets.get(key)
        if widget is not None and widget.isEnabled():
            widget.setFocus(Qt.OtherFocusReason)

    def set_base_model(self, spec: str | None, label: str) -> None:
        """Show (and train on) the window's base model; `label` is its short name."""
        self._base_spec = spec or ""
        self.base_label.setText(f"{label}  <span style='color:#9aa0a6'>(change it at the top "
                                "right)</span>")
        self.base_label.setToolTip(spec or "The built-in tiny model")

    def set_editable(self, editable: bool) -> None:
        """Lock the settings while a run uses them."""
        for box in self.findChildren(QGroupBox):
            box.setEnabled(editable)

    def _rank_changed(self, rank: int) -> None:
        if self.alpha_spin.value() == self._last_rank:  # alpha = rank stays so
            self.alpha_spin.setValue(rank)
        self._last_rank = rank

    def _update_output_placeholder(self) -> None:
        self.output_edit.setPlaceholderText(str(default_output_dir(self.name_edit.text().strip())))

    def _browse_reg(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the regularization images",
                                                  self.reg_edit.text())
        if folder:
            self.reg_edit.setText(folder)

    def _browse_output(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the output folder",
                                                  self.output_edit.text())
        if folder:
            self.output_edit.setText(folder)


def _spin(low: int, high: int, step: int = 1) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setSingleStep(step)
    spin.setAlignment(Qt.AlignRight)
    spin.setMinimumWidth(84)
    return spin


def _combo(items: list[tuple[str, object]]) -> QComboBox:
    combo = QComboBox()
    for text, value in items:
        combo.addItem(text, value)
    return combo


def _select(combo: QComboBox, value: object) -> None:
    """Select the item holding `value`; a value the combo lacks (e.g. a list of target modules
    from a preset) is added as its own item, so it round-trips unchanged."""
    for i in range(combo.count()):
        if combo.itemData(i) == value:
            combo.setCurrentIndex(i)
            return
    text = ", ".join(value) if isinstance(value, list) else str(value)
    combo.addItem(f"custom: {text}", value)
    combo.setCurrentIndex(combo.count() - 1)


def _row(*widgets: QWidget) -> QWidget:
    holder = QWidget()
    row = QHBoxLayout(holder)
    row.setContentsMargins(0, 0, 0, 0)
    row.setSpacing(6)
    for i, widget in enumerate(widgets):
        row.addWidget(widget, 1 if i == 0 else 0)
    return holder


def _pair(first: QWidget, label: str, second: QWidget, tip: str) -> QWidget:
    """Two fields on one row: `first`, then "label" `second`."""
    caption = QLabel(label)
    caption.setToolTip(tip)
    second.setToolTip(tip)
    holder = QWidget()
    row = QHBoxLayout(holder)
    row.setContentsMargins(0, 0, 0, 0)
    row.setSpacing(6)
    row.addWidget(first, 1)
    row.addSpacing(6)
    row.addWidget(caption)
    row.addWidget(second, 1)
    return holder


__all__ = ["TrainForm", "default_config", "default_output_dir", "FIELD_LABELS",
           "TINY_MODEL_LABEL"]
