"""`TrainConfig`: every setting of a LoRA training run, with defaults, help text and validation.

A config is a set of dataclasses (one per TOML section), loaded from / saved to TOML with a
`schema_version`. Unknown keys and invalid values raise `ConfigError` naming the key
("train.learning_rate: must be > 0, got -1").

Paths
-----
* A relative path written in a config *file* is relative to that file's folder, so a config and
  its dataset can travel together (`path = "images"` next to `train.toml`).
* A relative path given on the command line (`--set dataset.path=imgs`) is relative to the current
  working directory, like any other command-line path.
* `${cwd}` at the start of a path means the current working directory and `${config_dir}` the
  config file's folder; `~` is the home folder. The shipped quickstart preset writes to
  `${cwd}/output/quickstart`, so running it from the repository root fills `./output/`.
* The config saved beside the output holds absolute paths, so it re-runs from anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from lora_studio.core.errors import ConfigError

SCHEMA_VERSION = 1

TARGET_PRESETS: dict[str, dict[str, list[str]]] = {
    # UNet attention projections of the transformer blocks (self- and cross-attention).
    "attention": {
        "unet": ["to_q", "to_k", "to_v", "to_out.0"],
        "text_encoder": ["q_proj", "k_proj", "v_proj", "out_proj"],
    },
    # kohya's default set: every Linear / 1x1 conv inside the transformer blocks.
    "attention+mlp": {
        "unet": ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out",
                 "ff.net.0.proj", "ff.net.2"],
        "text_encoder": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    },
    # LoCon: the above plus the ResNet 3x3 convolutions (what a new shape needs on a small model)
    "attention+mlp+conv": {
        "unet": ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out",
                 "ff.net.0.proj", "ff.net.2", "conv1", "conv2"],
        "text_encoder": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    },
}
LR_SCHEDULERS = ("constant", "constant_with_warmup", "cosine", "linear")
OPTIMIZERS = ("adamw", "adamw8bit", "adafactor", "prodigy")
MIXED_PRECISIONS = ("no", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
OUTPUT_FORMATS = ("kohya", "diffusers")
SAVE_PRECISIONS = ("fp16", "bf16", "fp32")
PATH_KEYS = {("dataset", "path"), ("dataset", "reg_path"), ("dataset", "validation_path"),
             ("output", "path"), ("model", "config_dir")}
MAX_TOKEN_LENGTHS = (75, 150, 225)
# The keys of one `[[dataset.subsets]]` table and their defaults (None: the [dataset] value).
SUBSET_KEYS: dict[str, Any] = {"path": "", "repeats": 1, "caption_extension": None,
                               "default_caption": ""}


# The groups of the Train form, in the order it shows them (a field's `group`).
GROUPS = ("Model and data", "Dataset", "Buckets", "Captions", "LoRA", "Training", "Validation",
          "Previews", "Output")


def _sampler_names() -> list[str]:
    """The preview samplers (read when the form is built: no import cost here)."""
    from lora_studio.core.generate.samplers import sampler_names

    return sampler_names()


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a help text (shown by the UI and in saved configs' docs).

    The rest is metadata the Train form is generated from: `label` (its name on screen),
    `group` (one of GROUPS), `choices` (the allowed values, or a function returning them) with
    optional `choice_labels` ({value: text}), `minimum` / `maximum` / `step` of a number,
    `special` (the text shown at the minimum, e.g. "off"), `unit` (a suffix, e.g. "steps"),
    `widget` ("learning_rate": typed as text, "folder": with Browse, "prompts": one per line),
    `placeholder`, and `advanced=True` for the settings behind the form's "Advanced" expander.
    """
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ModelSection:
    base: str = _f("", "Base model: a diffusers folder, a .safetensors checkpoint or a hub id "
                   "already in the local cache. Empty or \"tiny\" = the built-in tiny model.",
                   label="Base model", group="Model and data")
    config_dir: str = _f("", "For a single-file checkpoint of a non-standard size only: a folder "
                         "of diffusers configs and tokenizers that matches it (the folder of a "
                         "diffusers copy of the model will do). Empty = the shipped SD 1.5 / "
                         "SD 2 / SDXL configs.", label="Checkpoint configs",
                         group="Model and data", widget="folder", advanced=True,
                         placeholder="the shipped configs (SD 1.5, SD 2, SDXL)")


@dataclass
class DatasetSection:
    path: str = _f("", "Folder of training images with caption files beside them, or a kohya "
                   "folder whose N_name subfolders each train N times per epoch (name = the "
                   "caption of that folder's images without a caption file).",
                   label="Dataset", group="Model and data")
    subsets: list = _f([], "Several image folders, each a [[dataset.subsets]] table with "
                       "path, repeats, caption_extension and default_caption (kohya's "
                       "image_dir, num_repeats, caption_extension, class_tokens). Used "
                       "instead of dataset.path when given.",
                       label="Dataset folders", group="Model and data")
    caption_extension: str = _f(".txt", "Extension of the caption files (image.png → image.txt).",
                                label="Caption extension", group="Captions", advanced=True)
    default_caption: str = _f("", "Caption of images without a caption file (a kohya N_name "
                              "folder's name comes next, then the trigger word).",
                              label="Default caption", group="Captions")
    trigger_word: str = _f("", "Word that calls up the LoRA (stored in the file's metadata; "
                           "default: the default caption).",
                           label="Trigger word", group="Captions")
    resolution: int = _f(512, "Training resolution in pixels: buckets hold about "
                         "resolution² pixels (without buckets, a resolution² square crop).",
                         label="Resolution", group="Dataset", minimum=8, maximum=4096, step=64,
                         unit="px")
    enable_bucket: bool = _f(True, "Aspect-ratio buckets (kohya's enable_bucket): each image "
                             "trains at the bucket of about resolution² pixels nearest its "
                             "aspect ratio, so a portrait keeps its face. Off: square crops.",
                             label="Aspect-ratio buckets", group="Buckets", advanced=True)
    min_bucket_reso: int = _f(0, "Smallest bucket side in pixels (kohya's min_bucket_reso); "
                              "0 = half the resolution (256 at 512, kohya's default).",
                              label="Smallest side", group="Buckets", minimum=0, maximum=8192,
                              step=64, special="auto", unit="px", advanced=True)
    max_bucket_reso: int = _f(0, "Largest bucket side in pixels (kohya's max_bucket_reso); "
                              "0 = twice the resolution (1024 at 512, kohya's default).",
                              label="Largest side", group="Buckets", minimum=0, maximum=8192,
                              step=64, special="auto", unit="px", advanced=True)
    bucket_reso_steps: int = _f(64, "Bucket sides are multiples of this (kohya's "
                                "bucket_reso_steps; 64 is safe for every model).",
                                label="Side step", group="Buckets", minimum=8, maximum=512,
                                step=8, unit="px", advanced=True)
    bucket_no_upscale: bool = _f(False, "Never enlarge an image: a small image gets a bucket "
                                 "of its own size (kohya's bucket_no_upscale).",
                                 label="Never upscale", group="Buckets", advanced=True)
    center_crop: bool = _f(True, "Crop the centre of each image to its bucket (false: a random "
                           "crop, drawn per step when latents are not cached).",
                           label="Centre crop", group="Dataset", advanced=True)
    random_flip: bool = _f(False, "Mirror images at random (doubles the latent cache). Leave "
                           "it off when a mirrored picture is wrong: text, logos, a face's "
                           "parting or scar, diagonal stripes.",
                           label="Mirror images", group="Dataset")
    repeats: int = _f(1, "How many times each image appears per epoch (multiplies a kohya "
                      "folder's N).",
                      label="Repeats", group="Dataset", minimum=1, maximum=10000)
    shuffle_caption: bool = _f(False, "Shuffle the comma-separated tags of each caption every "
                               "step (kohya's shuffle_caption; the first keep_tokens stay).",
                               label="Shuffle tags", group="Captions", advanced=True)
    keep_tokens: int = _f(0, "Tags at the start of a caption that shuffling and tag dropout "
                          "leave in place (kohya's keep_tokens; 1 keeps the trigger word).",
                          label="Keep first tags", group="Captions", minimum=0, maximum=255,
                          advanced=True)
    keep_tokens_separator: str = _f("", "Tags before this separator stay in place, e.g. "
                                    "\"|||\" (kohya's keep_tokens_separator; overrides "
                                    "keep_tokens in captions that hold it).",
                                    label="Keep separator", group="Captions", advanced=True)
    caption_dropout_rate: float = _f(0.0, "Share of steps trained with an empty caption "
                                     "(kohya's caption_dropout_rate).",
                                     label="Caption dropout", group="Captions", minimum=0.0,
                                     maximum=1.0, step=0.05, special="off", advanced=True)
    caption_tag_dropout_rate: float = _f(0.0, "Share of tags dropped from a caption at each "
                                         "step (kohya's caption_tag_dropout_rate).",
                                         label="Tag dropout", group="Captions", minimum=0.0,
                                         maximum=1.0, step=0.05, special="off", advanced=True)
    caption_prefix: str = _f("", "Text put before every caption (kohya's caption_prefix).",
                             label="Caption prefix", group="Captions", advanced=True)
    caption_suffix: str = _f("", "Text put after every caption (kohya's caption_suffix).",
                             label="Caption suffix", group="Captions", advanced=True)
    max_token_length: int = _f(75, "Caption tokens the text encoder reads: 75 (one CLIP "
                               "window; longer captions are cut and reported), 150 or 225 "
                               "(kohya's max_token_length: 2 or 3 windows of 75).",
                               label="Caption tokens", group="Captions",
                               choices=MAX_TOKEN_LENGTHS, advanced=True)
    reg_path: str = _f("", "Folder of regularization images (kohya's reg_data_dir): pictures "
                       "of what the LoRA should leave alone, captioned without the trigger "
                       "word, trained beside the dataset (as many per epoch as dataset "
                       "images) so other prompts keep what the base model draws. kohya's "
                       "N_class subfolders work; an image without a caption is captioned "
                       "with its folder's class. Empty = none.",
                       label="Reg images", group="Model and data", widget="folder",
                       placeholder="none (optional)")
    validation_split: float = _f(0.0, "Share of the dataset's images held out for validation "
                                 "(kohya's validation_split, e.g. 0.1): they are not trained "
                                 "on, and the validation loss on them shows when the LoRA "
                                 "starts to overfit. 0 = none.",
                                 label="Validation share", group="Validation", minimum=0.0,
                                 maximum=0.9, step=0.05, special="off")
    validation_path: str = _f("", "A folder of captioned images to validate on instead of a "
                              "share of the dataset (never trained on). Empty = none.",
                              label="Validation images", group="Validation", widget="folder",
                              placeholder="none (optional)", advanced=True)


@dataclass
class LoraSection:
    rank: int = _f(16, "LoRA rank (dim): size of the low-rank update.",
                   label="Rank", group="LoRA", minimum=1, maximum=1024)
    alpha: float = _f(16.0, "LoRA alpha: the update is scaled by alpha / rank.",
                      label="Alpha", group="LoRA", minimum=0.01, maximum=4096.0, step=1.0)
    dropout: float = _f(0.0, "Dropout on the LoRA input during training (0 to < 1).",
                        label="LoRA dropout", group="LoRA", minimum=0.0, maximum=0.95, step=0.05,
                        special="off", advanced=True)
    targets: Any = _f("attention", "\"attention\", \"attention+mlp\" (kohya's default), "
                      "\"attention+mlp+conv\" (LoCon: also the ResNet convolutions), or a "
                      "list of UNet module names (e.g. [\"to_q\", \"to_v\"]).",
                      label="Targets", group="LoRA", choices=tuple(TARGET_PRESETS))
    train_text_encoder: bool = _f(False, "Also train a LoRA on the text encoder (both text "
                                  "encoders of an SDXL model).",
                                  label="Text encoder too", group="LoRA")
    text_encoder_lr: float = _f(0.0, "Learning rate of the text-encoder LoRA, both encoders "
                                "for SDXL (0 = the same as train.learning_rate).",
                                label="Text encoder LR", group="LoRA", widget="learning_rate",
                                minimum=0.0, special="same as LR")


@dataclass
class TrainSection:
    steps: int = _f(1000, "Number of optimizer steps.",
                    label="Steps", group="Training", minimum=1, maximum=10_000_000)
    max_train_epochs: int = _f(0, "Train this many epochs instead of train.steps (kohya's "
                               "max_train_epochs; 0 = use train.steps).",
                               label="Epochs", group="Training", minimum=0, maximum=100_000,
                               special="off")
    batch_size: int = _f(1, "Images per step on each process.",
                         label="Batch size", group="Training", minimum=1, maximum=1024)
    gradient_accumulation: int = _f(1, "Batches summed before each optimizer step.",
                                    label="Accumulate", group="Training", minimum=1, maximum=1024,
                                    advanced=True)
    learning_rate: float = _f(1e-4, "Learning rate of the UNet LoRA.",
                              label="Learning rate", group="Training", widget="learning_rate")
    lr_scheduler: str = _f("constant", "Learning-rate schedule: " + ", ".join(LR_SCHEDULERS) + ".",
                           label="LR schedule", group="Training", choices=LR_SCHEDULERS)
    warmup_steps: int = _f(0, "Steps of linear warm-up (schedulers with warm-up).",
                           label="Warm-up", group="Training", minimum=0, maximum=1_000_000,
                           unit="steps", advanced=True)
    optimizer: str = _f("adamw", "\"adamw\"; \"adamw8bit\" (needs bitsandbytes and CUDA; "
                        "less optimizer memory); \"adafactor\" (less memory; fixed learning "
                        "rate as kohya sets it for LoRA, e.g. 1e-4); or \"prodigy\" (needs "
                        "pip install prodigyopt; it sets the step size itself: use "
                        "train.learning_rate = 1.0 and lora.text_encoder_lr = 0, the same). "
                        "train.weight_decay applies to each.",
                        label="Optimizer", group="Training", choices=OPTIMIZERS, advanced=True)
    weight_decay: float = _f(1e-2, "Weight decay (decoupled, as AdamW applies it).",
                             label="Weight decay", group="Training", minimum=0.0, maximum=1.0,
                             step=0.01, special="off", advanced=True)
    seed: int = _f(42, "Seed for LoRA init, data order, noise and timesteps.",
                   label="Seed", group="Training", minimum=0, maximum=2**31 - 1, advanced=True)
    device: str = _f("auto", "\"auto\" (CUDA, then Apple MPS, then CPU), \"cuda\", \"mps\" "
                     "or \"cpu\".",
                     label="Device", group="Training", choices=DEVICES, advanced=True)
    mixed_precision: str = _f("no", "\"no\" (fp32), \"fp16\" (CUDA) or \"bf16\".",
                              label="Precision", group="Training", choices=MIXED_PRECISIONS,
                              choice_labels={"no": "fp32 (no)"})
    gradient_checkpointing: bool = _f(False, "Trade compute for memory in the UNet.",
                                      label="Gradient checkpointing", group="Training",
                                      advanced=True)
    min_snr_gamma: float = _f(0.0, "Min-SNR loss weighting gamma (5 is usual; 0 = off).",
                              label="Min-SNR gamma", group="Training", minimum=0.0, maximum=20.0,
                              step=0.5, special="off", advanced=True)
    noise_offset: float = _f(0.0, "Noise offset (0.05-0.1 helps very dark/bright images).",
                             label="Noise offset", group="Training", minimum=0.0, maximum=1.0,
                             step=0.01, special="off", advanced=True)
    min_timestep: int = _f(0, "Lowest timestep trained (kohya's min_timestep; 0 = all).",
                           label="Min timestep", group="Training", minimum=0, maximum=999,
                           step=50, advanced=True)
    max_timestep: int = _f(1000, "Timesteps trained are below this (kohya's max_timestep; "
                           "1000 = all). Lower it to teach details, not layout.",
                           label="Max timestep", group="Training", minimum=1, maximum=1000,
                           step=50, advanced=True)
    preserve_base: float = _f(0.0, "Keep the base model where the trigger word is absent "
                              "(differential output preservation, as in ai-toolkit): each step "
                              "also teaches the LoRA to draw each caption without the trigger "
                              "word exactly as the base model does. Less bleed into other "
                              "prompts; about 2x the step time. 0 = off, 1 = usual; needs "
                              "dataset.trigger_word.",
                              label="Keep base", group="Training", minimum=0.0, maximum=10.0,
                              step=0.5, special="off")
    prior_loss_weight: float = _f(1.0, "Weight of the regularization images' loss against "
                                  "the dataset's (kohya's prior_loss_weight; 1 = equal).",
                                  label="Reg weight", group="Model and data", minimum=0.0,
                                  maximum=10.0, step=0.25)
    log_with: str = _f("", "\"tensorboard\": also write the loss, learning rate, gradient norm, "
                       "validation loss and each LoRA module's weight norm as TensorBoard logs "
                       "under <output>/logs (kohya's log_with; needs the tensorboard package). "
                       "Empty = off.", label="Log with", group="Output",
                       choices=("", "tensorboard"), choice_labels={"": "off"}, advanced=True)
    max_grad_norm: float = _f(1.0, "Clip the gradient norm to this (0 = no clipping).",
                              label="Clip gradients", group="Training", minimum=0.0,
                              maximum=100.0, step=0.1, special="off", advanced=True)
    cache_latents: bool = _f(True, "Encode every image (and caption) once before training.",
                             label="Cache latents", group="Training", advanced=True)
    validate_every_n_steps: int = _f(0, "Compute the validation loss every N steps (kohya's "
                                     "validate_every_n_steps); 0 = at the end of every epoch. "
                                     "Needs dataset.validation_split or validation_path.",
                                     label="Validate every", group="Validation", minimum=0,
                                     maximum=10_000_000, step=50, unit="steps",
                                     special="each epoch")


@dataclass
class SampleSection:
    every: int = _f(0, "Render preview images every N steps (0 = off).",
                    label="Preview every", group="Previews", minimum=0, maximum=10_000_000,
                    step=50, special="off", unit="steps")
    prompts: list = _f([], "Preview prompts (fixed; rendered with the fixed seed).",
                       label="Prompts", group="Previews", widget="prompts",
                       placeholder="One prompt per line (default: the trigger word)")
    negative_prompt: str = _f("", "Negative prompt of the previews.",
                              label="Negative prompt", group="Previews", advanced=True)
    seed: int = _f(1234, "Seed of the previews (the same every time, to compare steps).",
                   label="Preview seed", group="Previews", minimum=0, maximum=2**31 - 1,
                   advanced=True)
    steps: int = _f(20, "Denoising steps of a preview.",
                    label="Preview steps", group="Previews", minimum=1, maximum=1000)
    cfg: float = _f(7.0, "Guidance scale of the previews.",
                    label="Guidance", group="Previews", minimum=0.0, maximum=30.0, step=0.5,
                    advanced=True)
    sampler: str = _f("Euler a", "Sampler of the previews, by its A1111 name (as in "
                      "`lora-studio generate --sampler`).",
                      label="Sampler", group="Previews", choices=_sampler_names, advanced=True)


@dataclass
class CheckpointSection:
    every: int = _f(0, "Save a resumable checkpoint every N steps (0 = off).",
                    label="Checkpoint every", group="Output", minimum=0, maximum=10_000_000,
                    step=100, special="off", unit="steps", advanced=True)
    keep: int = _f(0, "Keep only the newest N checkpoints (older ones are deleted after a new "
                   "one is complete; 0 = keep all).", label="Keep checkpoints", group="Output",
                   minimum=0, maximum=10_000, special="all", advanced=True)


@dataclass
class OutputSection:
    path: str = _f("output", "Output folder (LoRA files, the config used, checkpoints). A "
                   "path ending in .safetensors is the LoRA file itself: its folder is the "
                   "output folder and its name the LoRA name.",
                   label="Output folder", group="Output", widget="folder")
    name: str = _f("lora", "File name of the LoRA (without .safetensors).",
                   label="LoRA name", group="Output")
    format: str = _f("kohya", "\"kohya\" (A1111, ComfyUI, Forge) or \"diffusers\" (PEFT keys).",
                     label="Format", group="Output", choices=OUTPUT_FORMATS)
    save_every: int = _f(0, "Also save <name>-step<N>.safetensors every N steps (0 = off).",
                         label="Save every", group="Output", minimum=0, maximum=10_000_000,
                         step=100, special="off", unit="steps", advanced=True)
    save_every_n_epochs: int = _f(0, "Also save <name>-<epoch>.safetensors at the end of every "
                                  "N epochs, numbered as kohya does (0 = off).",
                                  label="Save every N epochs", group="Output", minimum=0,
                                  maximum=100_000, special="off", advanced=True)
    save_precision: str = _f("fp16", "Precision of the saved LoRA: fp16, bf16 or fp32.",
                             label="Save precision", group="Output", choices=SAVE_PRECISIONS,
                             advanced=True)


SECTIONS: dict[str, type] = {
    "model": ModelSection, "dataset": DatasetSection, "lora": LoraSection,
    "train": TrainSection, "sample": SampleSection, "checkpoint": CheckpointSection,
    "output": OutputSection,
}


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    dataset: DatasetSection = field(default_factory=DatasetSection)
    lora: LoraSection = field(default_factory=LoraSection)
    train: TrainSection = field(default_factory=TrainSection)
    sample: SampleSection = field(default_factory=SampleSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    output: OutputSection = field(default_factory=OutputSection)
    schema_version: int = SCHEMA_VERSION

    # ------------------------------------------------------------------ convenience
    @property
    def output_dir(self) -> Path:
        return Path(self.output.path)

    @property
    def lora_path(self) -> Path:
        return self.output_dir / f"{self.output.name}.safetensors"

    @property
    def config_copy_path(self) -> Path:
        return self.output_dir / f"{self.output.name}.toml"

    def bucket_settings(self):
        """The aspect-ratio bucket settings of [dataset] (a `dataset.buckets.BucketSettings`)."""
        from lora_studio.core.dataset.buckets import BucketSettings

        d = self.dataset
        steps = max(d.bucket_reso_steps, 1)
        auto_min = max(steps, d.resolution // 2 // steps * steps)
        # Below one bucket step there is no bucket but the square (the plan says so).
        enabled = d.enable_bucket and d.resolution >= steps
        return BucketSettings(resolution=d.resolution, enabled=enabled,
                              min_reso=d.min_bucket_reso or auto_min,
                              max_reso=d.max_bucket_reso or -(-d.resolution * 2 // steps) * steps,
                              reso_steps=d.bucket_reso_steps, no_upscale=d.bucket_no_upscale)

    def caption_options(self):
        """kohya's caption options of [dataset] (a `dataset.captions.CaptionOptions`)."""
        from lora_studio.core.dataset.captions import CaptionOptions

        d = self.dataset
        return CaptionOptions(shuffle_caption=d.shuffle_caption, keep_tokens=d.keep_tokens,
                              keep_tokens_separator=d.keep_tokens_separator,
                              caption_dropout_rate=d.caption_dropout_rate,
                              caption_tag_dropout_rate=d.caption_tag_dropout_rate,
                              caption_prefix=d.caption_prefix, caption_suffix=d.caption_suffix)

    def unet_targets(self) -> list[str]:
        t = self.lora.targets
        return list(TARGET_PRESETS[t]["unet"]) if isinstance(t, str) else list(t)

    def text_encoder_targets(self) -> list[str]:
        t = self.lora.targets
        preset = t if isinstance(t, str) else "attention"
        return list(TARGET_PRESETS[preset]["text_encoder"])

    def trigger_phrase(self) -> str:
        return self.dataset.trigger_word or self.dataset.default_caption

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema_version": self.schema_version}
        for name in SECTIONS:
            out[name] = dataclasses.asdict(getattr(self, name))
        return out

    # ------------------------------------------------------------------ validation
    def validate(self) -> TrainConfig:
        """Check every value; raise ConfigError naming the first bad key. Returns self."""
        d, lo, tr, sa, ck, out = (self.dataset, self.lora, self.train, self.sample,
                                  self.checkpoint, self.output)
        if self.schema_version != SCHEMA_VERSION:
            raise ConfigError("schema_version", f"must be {SCHEMA_VERSION}, got "
                              f"{self.schema_version}", "This config was written by another "
                              "version of LoRA Studio; re-create it from a preset.")
        if not d.path and not d.subsets:
            raise ConfigError("dataset.path", "is empty", "Set it to the folder of your images "
                              "(or list the folders as [[dataset.subsets]] tables).")
        _check(d.caption_extension.startswith("."), "dataset.caption_extension",
               f"must start with '.', got {d.caption_extension!r}")
        _at_least("dataset.resolution", d.resolution, 8)
        _check(d.resolution % 8 == 0, "dataset.resolution",
               f"must be a multiple of 8, got {d.resolution}")
        _at_least("dataset.repeats", d.repeats, 1)
        _validate_captions(d)
        self.bucket_settings().validate()
        if d.reg_path and d.path and Path(d.reg_path).expanduser().resolve() == \
                Path(d.path).expanduser().resolve():
            raise ConfigError("dataset.reg_path", "is the dataset folder itself",
                              "Point it at a separate folder of images without the concept, "
                              "or leave it empty.")
        _at_least("lora.rank", lo.rank, 1)
        _positive("lora.alpha", lo.alpha)
        _check(0 <= lo.dropout < 1, "lora.dropout", f"must be in [0, 1), got {lo.dropout}")
        if isinstance(lo.targets, str):
            _one_of("lora.targets", lo.targets, tuple(TARGET_PRESETS),
                    extra=" or a list of module names")
        elif (not isinstance(lo.targets, list) or not lo.targets
              or not all(isinstance(t, str) and t for t in lo.targets)):
            raise ConfigError("lora.targets", f"must be a preset name or a non-empty list of "
                              f"module names, got {lo.targets!r}")
        _check(lo.text_encoder_lr >= 0, "lora.text_encoder_lr",
               f"must be >= 0, got {lo.text_encoder_lr}")
        _at_most_lr("lora.text_encoder_lr", lo.text_encoder_lr)
        _at_least("train.steps", tr.steps, 1)
        _at_least("train.max_train_epochs", tr.max_train_epochs, 0)
        _at_least("train.batch_size", tr.batch_size, 1)
        _at_least("train.gradient_accumulation", tr.gradient_accumulation, 1)
        _positive("train.learning_rate", tr.learning_rate)
        _at_most_lr("train.learning_rate", tr.learning_rate)
        _one_of("train.lr_scheduler", tr.lr_scheduler, LR_SCHEDULERS)
        _at_least("train.warmup_steps", tr.warmup_steps, 0)
        _one_of("train.optimizer", tr.optimizer, OPTIMIZERS)
        _check(tr.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {tr.weight_decay}")
        _one_of("train.device", tr.device, DEVICES)
        _one_of("train.mixed_precision", tr.mixed_precision, MIXED_PRECISIONS)
        for key in ("min_snr_gamma", "noise_offset", "max_grad_norm", "preserve_base",
                    "prior_loss_weight"):
            value = getattr(tr, key)
            _check(value >= 0, f"train.{key}", f"must be >= 0 (0 = off), got {value}")
        _check(1 <= tr.max_timestep <= 1000, "train.max_timestep",
               f"must be in 1..1000, got {tr.max_timestep}")
        _check(0 <= tr.min_timestep < tr.max_timestep, "train.min_timestep",
               f"must be below train.max_timestep ({tr.max_timestep}) and >= 0, got "
               f"{tr.min_timestep}")
        if tr.preserve_base and not d.trigger_word.strip():
            raise ConfigError("train.preserve_base", "needs a trigger word (the base model is "
                              "kept on captions without it)",
                              "Set dataset.trigger_word, or train.preserve_base = 0.")
        _at_least("sample.every", sa.every, 0)
        _check(all(isinstance(p, str) for p in sa.prompts), "sample.prompts",
               f"must be a list of strings, got {sa.prompts!r}")
        if sa.every and not sa.prompts:
            raise ConfigError("sample.prompts", "is empty but sample.every is set",
                              "Add at least one prompt, or set sample.every = 0.")
        _at_least("sample.steps", sa.steps, 1)
        _check(sa.cfg >= 0, "sample.cfg", f"must be >= 0, got {sa.cfg}")
        _check_sampler(sa.sampler)
        _check_sample_prompts(self)
        _at_least("checkpoint.every", ck.every, 0)
        _at_least("checkpoint.keep", ck.keep, 0)
        _one_of("train.log_with", tr.log_with, ("", "tensorboard"))
        _check(not (tr.optimizer == "prodigy" and lo.train_text_encoder
                    and lo.text_encoder_lr not in (0, tr.learning_rate)),
               "lora.text_encoder_lr", "must equal train.learning_rate (or be 0) with "
               "optimizer = \"prodigy\", which finds one step size for every parameter",
               "Set lora.text_encoder_lr = 0, or use optimizer = \"adamw\".")
        if not out.path:
            raise ConfigError("output.path", "is empty", "Set the folder to write the LoRA to.")
        if out.path.lower().endswith(".safetensors"):  # the LoRA file itself
            out.path, out.name = str(Path(out.path).parent), Path(out.path).stem
        _check(bool(out.name) and not any(c in out.name for c in "/\\:"), "output.name",
               f"must be a plain file name, got {out.name!r}")
        _one_of("output.format", out.format, OUTPUT_FORMATS)
        _at_least("output.save_every", out.save_every, 0)
        _at_least("output.save_every_n_epochs", out.save_every_n_epochs, 0)
        _one_of("output.save_precision", out.save_precision, SAVE_PRECISIONS)
        return self


def _validate_captions(d: DatasetSection) -> None:
    _at_least("dataset.keep_tokens", d.keep_tokens, 0)
    for key in ("caption_dropout_rate", "caption_tag_dropout_rate"):
        value = getattr(d, key)
        _check(0 <= value <= 1, f"dataset.{key}", f"must be in [0, 1], got {value}")
    _check(d.max_token_length in MAX_TOKEN_LENGTHS, "dataset.max_token_length",
           f"must be one of {', '.join(map(str, MAX_TOKEN_LENGTHS))}, got {d.max_token_length}")
    _check(0 <= d.validation_split < 1, "dataset.validation_split",
           f"must be in [0, 1), got {d.validation_split}")
    _check(not (d.validation_split and d.validation_path), "dataset.validation_path",
           "cannot be used together with dataset.validation_split", "Set one of the two.")


def _check_sample_prompts(cfg: TrainConfig) -> None:
    """kohya's inline options (--w, --d, ...) of every preview prompt parse now, not at the first
    preview hours into the run (raises the ConfigError naming the option and the prompt)."""
    from lora_studio.core.train.sample_prompts import sample_prompts

    sample_prompts(cfg)


def _check_sampler(name: str) -> None:
    from lora_studio.core.errors import StudioError
    from lora_studio.core.generate.samplers import resolve_sampler

    try:
        resolve_sampler(name)
    except StudioError as exc:
        raise ConfigError("sample.sampler", f"unknown sampler {name!r}", exc.fix) from exc


def _check(ok: bool, key: str, what: str, fix: str = "") -> None:
    if not ok:
        raise ConfigError(key, what, fix or _default_fix(key))


def _default_fix(key: str) -> str:
    """"The default is 0.0001." for a setting that has a default worth naming, else ""."""
    section, _, name = key.partition(".")
    fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])} \
        if section in SECTIONS else {}
    default = fields[name].default if name in fields else dataclasses.MISSING
    if isinstance(default, bool) or not isinstance(default, (int, float, str)) or \
            default == "":
        return ""
    return f"The default is {json.dumps(default)}."


def _at_least(key: str, value: int, low: int) -> None:
    _check(value >= low, key, f"must be >= {low}, got {value}")


def _positive(key: str, value: float) -> None:
    _check(value > 0 and math.isfinite(value), key, f"must be > 0, got {value:g}")


MAX_LEARNING_RATE = 10.0  # Prodigy / D-Adaptation use 1.0; nothing trains above this


def _at_most_lr(key: str, value: float) -> None:
    # Finite but huge (1e38) would otherwise overflow inside torch with a bare RuntimeError.
    _check(value <= MAX_LEARNING_RATE, key, f"must be at most {MAX_LEARNING_RATE:g}, got {value:g}",
           "Typical: 1e-4 for AdamW (1e-3 on the built-in model), 1.0 for Prodigy.")


def _one_of(key: str, value: str, allowed: Sequence[str], extra: str = "") -> None:
    _check(value in allowed, key, f"must be one of {', '.join(repr(a) for a in allowed)}"
           f"{extra}, got {value!r}")


# Reading and writing configs (TOML, --set) lives in config_io; its names are config's too.
from lora_studio.core.train.config_io import (  # noqa: E402
    apply_overrides,
    config_from_dict,
    config_to_toml,
    describe_keys,
    load_config,
    save_config,
)

__all__ = [
    "GROUPS", "OPTIMIZERS", "SECTIONS",
    "TrainConfig", "ModelSection", "DatasetSection", "LoraSection", "TrainSection",
    "SampleSection", "CheckpointSection", "OutputSection", "SCHEMA_VERSION", "TARGET_PRESETS",
    "load_config", "save_config", "config_from_dict", "apply_overrides", "config_to_toml",
    "describe_keys",
]
