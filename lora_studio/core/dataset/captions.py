"""Captions the kohya way: per-step caption options, and captions longer than CLIP's window.

`process_caption` follows sd-scripts' `BaseDataset.process_caption` (library/train_util.py):

- `caption_prefix` / `caption_suffix` are joined to the caption with a space, *before* anything
  else: a prefix therefore becomes part of the first tag ("sks" + "1girl, solo" gives the tag
  "sks 1girl"), and counts toward `keep_tokens` as one tag only if it ends with a comma.
- `caption_dropout_rate`: the whole caption, prefix and suffix included, becomes "".
- Tags are split on "," and stripped. With `keep_tokens_separator` (e.g. "|||") in the caption,
  the text before it is the fixed part, the text after it the flexible part, and a second
  separator starts an optional fixed suffix part; otherwise the first `keep_tokens` tags are
  fixed and the rest flexible. Only the flexible tags are shuffled (`shuffle_caption`), then
  each is dropped with probability `caption_tag_dropout_rate`; the result is joined with ", ".
- When neither shuffle nor tag dropout is on, the caption text is left as it is.
- Random draws come from the `rng` the caller passes (seeded per seed / epoch / sample), never
  from the global `random`: the caption a step sees is reproducible and survives a resume.

Where we differ from kohya, on purpose:

- The separator is removed even when nothing is shuffled or dropped (kohya then trains on the
  literal "|||" text, which no prompt will ever contain).
- Empty tags ("a, , b", a trailing comma) are dropped in the keep_tokens form too (kohya keeps
  them there, which can put a stray ", " at the front of a shuffled caption).
- Not carried over: wildcards and kohya's "first line only" rule (our captions are one line:
  `scan.read_caption` joins lines), token warmup, `caption_dropout_every_n_epochs`,
  `secondary_separator`, a custom `caption_separator`, textual-inversion replacements.

Long captions (`max_token_length` 150 / 225) follow kohya's `get_input_ids` and
`get_hidden_states` (strategy_sd.py in newer sd-scripts), not A1111's concatenation of whole
77-token encodings: the tokens are cut into 75-token chunks, each encoded as BOS + chunk + EOS,
and the hidden states keep the first BOS, the 75 middle states of every chunk and the last EOS
(2 + 75·n positions). The LoRA then trains on what kohya-trained LoRAs were trained on; A1111
and ComfyUI both read longer prompts at generation time, each in its own way. kohya's SD2
hidden-state fix-up (copying a PAD state into an empty chunk's first slot) compares a token id
with the token *string*, so it never runs; we do what kohya therefore does (no copy).

torch and transformers are imported inside the functions that need them: `dataset check`
imports this module to count tokens without loading torch.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from lora_studio.core.paths import configs_dir

if TYPE_CHECKING:
    import torch
    from transformers import CLIPTokenizer

CHUNK = 75  # caption tokens in one CLIP window (77 positions less BOS and EOS)
MAX_TOKEN_LENGTHS = (75, 150, 225)  # kohya's max_token_length choices
TAG_SEPARATOR = ","


@dataclass(frozen=True)
class CaptionOptions:
    """kohya's per-subset caption options (the names are kohya's)."""

    shuffle_caption: bool = False
    keep_tokens: int = 0
    keep_tokens_separator: str = ""
    caption_dropout_rate: float = 0.0
    caption_tag_dropout_rate: float = 0.0
    caption_prefix: str = ""
    caption_suffix: str = ""

    def __post_init__(self) -> None:
        if self.keep_tokens < 0:
            raise ValueError(f"keep_tokens must be 0 or more, not {self.keep_tokens}")
        for name in ("caption_dropout_rate", "caption_tag_dropout_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {rate}")

    @property
    def varies_per_step(self) -> bool:
        """Does the text a step sees change from step to step (so text embeddings cannot be
        cached)?"""
        return bool(self.why_uncached())

    def why_uncached(self) -> str:
        """A short reason for the training log ("shuffle_caption is on"); "" when the caption
        is the same every step."""
        reasons = []
        if self.shuffle_caption:
            reasons.append("shuffle_caption is on")
        if self.caption_dropout_rate > 0:
            reasons.append(f"caption_dropout_rate is {self.caption_dropout_rate:g}")
        if self.caption_tag_dropout_rate > 0:
            reasons.append(f"caption_tag_dropout_rate is {self.caption_tag_dropout_rate:g}")
        return ", ".join(reasons)


def _tags(text: str) -> list[str]:
    return [tag.strip() for tag in text.split(TAG_SEPARATOR) if tag.strip()]


def _split_tags(caption: str, options: CaptionOptions) -> tuple[list[str], list[str], list[str]]:
    """(fixed, flexible, fixed suffix) tags, as kohya splits them."""
    separator = options.keep_tokens_separator
    if separator and separator in caption:
        fixed, flexible = caption.split(separator, 1)
        suffix = ""
        if separator in flexible:
            flexible, suffix = flexible.split(separator, 1)
        return _tags(fixed), _tags(flexible), _tags(suffix)
    tags = _tags(caption)
    return tags[:options.keep_tokens], tags[options.keep_tokens:], []


def process_caption(caption: str, options: CaptionOptions, rng: random.Random) -> str:
    """The caption one training step sees (kohya's `process_caption`; see the module doc)."""
    if options.caption_prefix:
        caption = f"{options.caption_prefix} {caption}"
    if options.caption_suffix:
        caption = f"{caption} {options.caption_suffix}"
    if options.caption_dropout_rate > 0 and rng.random() < options.caption_dropout_rate:
        return ""
    separator = options.keep_tokens_separator
    reorders = options.shuffle_caption or options.caption_tag_dropout_rate > 0
    if not reorders and not (separator and separator in caption):
        return caption
    fixed, flexible, suffix = _split_tags(caption, options)
    if options.shuffle_caption:
        rng.shuffle(flexible)
    rate = options.caption_tag_dropout_rate
    if rate > 0:
        flexible = [tag for tag in flexible if rng.random() >= rate]
    return ", ".join(fixed + flexible + suffix)


@dataclass(frozen=True)
class CaptionWindow:
    """How much of a caption the text encoder reads."""

    tokens: int  # CLIP tokens of the caption (without BOS/EOS)
    limit: int  # 75 * chunks
    first_dropped_tag: str | None  # first tag (stripped) cut partly or wholly; None if it fits
    cut_at: int | None = None  # the caption's first character the text encoder does not read

    @property
    def cut(self) -> bool:
        return self.tokens > self.limit

    @property
    def kept(self) -> int:
        return min(self.tokens, self.limit)


def _check_length(max_token_length: int) -> int:
    if max_token_length not in MAX_TOKEN_LENGTHS:
        raise ValueError(f"max_token_length must be one of {MAX_TOKEN_LENGTHS} (kohya's "
                         f"choices), not {max_token_length!r}")
    return max_token_length


def _tag_at(caption: str, position: int) -> str | None:
    """The first tag whose text reaches `position` or beyond (a comma at `position` belongs to
    no tag, so the tag after it is the one)."""
    start = 0
    for part in caption.split(TAG_SEPARATOR):
        tag = part.strip()
        if tag and start + len(part.rstrip()) > position:
            return tag
        start += len(part) + len(TAG_SEPARATOR)
    return None  # only separators were cut


def caption_window(tokenizer, caption: str, max_token_length: int = 75) -> CaptionWindow:
    """Count the caption's CLIP tokens and name the first tag the text encoder does not read
    whole. Needs a fast (tokenizers-backed) tokenizer, which transformers 5's CLIPTokenizer is:
    the cut is placed with its character offsets."""
    limit = _check_length(max_token_length)
    encoded = tokenizer(caption, add_special_tokens=False, return_offsets_mapping=True,
                        verbose=False)
    tokens = len(encoded["input_ids"])
    if tokens <= limit:
        return CaptionWindow(tokens, limit, None)
    cut_at = encoded["offset_mapping"][limit][0]  # first character of the first unread token
    return CaptionWindow(tokens, limit, _tag_at(caption, cut_at), cut_at)


_TOKENIZER_LOCK = threading.Lock()


def caption_tokenizer() -> CLIPTokenizer:
    """The SD 1.x CLIP tokenizer shipped under resources/ (no model needed): for counting
    tokens in `dataset check`. SD2 and SDXL tokenize text into the same tokens. Loaded by one
    thread at a time: transformers' first import is not safe from two threads at once (the
    second sees a half-made module), and the app counts tokens in background pools."""
    with _TOKENIZER_LOCK:
        return _load_caption_tokenizer()


@lru_cache(maxsize=1)
def _load_caption_tokenizer() -> CLIPTokenizer:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(configs_dir() / "sd15" / "tokenizer",
                                         model_max_length=77)


def caption_token_ids(tokenizer, captions: list[str], max_token_length: int = 75) -> torch.Tensor:
    """Token ids as the text encoder gets them: [batch, chunks, 77].

    75: the ids `StableDiffusionPipeline.encode_prompt` uses (one chunk). 150 / 225: kohya's
    `get_input_ids`: BOS + 75 tokens + the last id of the max_token_length + 2 tokenisation per
    chunk; for tokenizers whose pad is not EOS (SD2, SDXL's second), a chunk whose text runs to
    its end gets EOS last, and an empty chunk gets EOS after BOS."""
    import torch

    limit = _check_length(max_token_length)
    captions = [_head(tokenizer, caption, limit) for caption in captions]
    if limit == CHUNK:
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        return ids.unsqueeze(1)
    ids = tokenizer(captions, padding="max_length", max_length=limit + 2, truncation=True,
                    return_tensors="pt").input_ids
    chunks = torch.stack([torch.cat([ids[:, :1], ids[:, 1 + k:1 + k + CHUNK], ids[:, -1:]], 1)
                          for k in range(0, limit, CHUNK)], dim=1)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if pad != eos:
        text_to_end = (chunks[..., -2] != eos) & (chunks[..., -2] != pad)
        chunks[..., -1] = torch.where(text_to_end, eos, chunks[..., -1])
        chunks[..., 1] = torch.where(chunks[..., 1] == pad, eos, chunks[..., 1])
    return chunks


_HEAD_CHARS = 4096


def _head(tokenizer, caption: str, limit: int) -> str:
    """`caption`, or a prefix of it ending before a space with more than `limit` tokens: the
    same ids once truncated to `limit` (CLIP never joins text across a space into one token),
    so a 1 MB caption is not tokenized whole at every step."""
    size = _HEAD_CHARS
    while len(caption) > size:
        cut = caption.rfind(" ", 0, size)
        if cut > 0 and len(tokenizer(caption[:cut], add_special_tokens=False,
                                     verbose=False)["input_ids"]) > limit:
            return caption[:cut]
        size *= 4
    return caption


def encode_captions(tokenizer, text_encoder, captions: list[str],
                    max_token_length: int = 75) -> torch.Tensor:
    """Captions → conditioning [batch, 2 + max_token_length, hidden]: the text encoder's last
    hidden states (SD 1.x / 2.x).

    75 is exactly `train.data.encode_text` (and the pipeline's encode_prompt); 150 / 225 encode
    every chunk of `caption_token_ids` and keep the first BOS, each chunk's 75 middle states and
    the last EOS, as kohya's `get_hidden_states` does."""
    chunks = caption_token_ids(tokenizer, captions, max_token_length)
    batch, count, width = chunks.shape
    hidden = text_encoder(chunks.reshape(batch * count, width).to(text_encoder.device))[0]
    return join_windows(hidden, batch, count)


def join_windows(hidden: torch.Tensor, batch: int, count: int) -> torch.Tensor:
    """Per-window hidden states [batch * count, 77, w] → one sequence per caption
    [batch, 2 + 75 * count, w]: the first BOS, each window's 75 middle states, the last EOS
    (kohya's way; a single window is returned as it is)."""
    import torch

    if count == 1:
        return hidden
    width = hidden.shape[1]
    hidden = hidden.reshape(batch, count, width, hidden.shape[-1])
    middles = hidden[:, :, 1:-1].reshape(batch, count * (width - 2), hidden.shape[-1])
    return torch.cat([hidden[:, 0, :1], middles, hidden[:, -1, -1:]], dim=1)
