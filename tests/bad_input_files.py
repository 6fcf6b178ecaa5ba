"""The bad-input corpus for LoRA files and base-model checkpoints (issue 22): what each file is,
what is wrong with it, and the writer that makes it.

Small files are committed under tests/data/bad_inputs/loras/ and .../models/ (a few hundred
bytes each); `python tests/bad_input_files.py` writes them again. Three kinds are never
committed and are written at test time by `write_test_time_files`:
- pickles with a payload (`.pt` / `.bin` LoRAs, `.ckpt` / `.pt` base models, one renamed
  `.safetensors`): unpickling them would create a sentinel file, so nobody ever unpickles a
  committed payload by accident, and the tests prove the sentinel never appears;
- the 100 MB safetensors header (too big to commit);
- the empty model folder (git keeps no empty folders).

Each entry names the fragments its refusal must hold (`says`), checked against what the user
sees; the (IA)³ entry names none (what must hold is a StudioError with a fix).

The LoHa, LoKr and full-difference files (issue 23) moved out of BAD_LORAS: LoRA Studio inspects,
generates with, merges (with a rank), fuses and resizes them now. They stay in the folder as
LYCORIS_LORAS, good files that the command taking plain LoRAs only (convert, PLAIN_LORA_COMMANDS)
refuses by name: no plain LoRA holds their update exactly.
"""

from __future__ import annotations

import json
import os
import random
import struct
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parent / "data" / "bad_inputs"
LORAS = DATA / "loras"
MODELS = DATA / "models"

# the tiny SD 1.x model (core.models.tiny): a 32-wide attention layer of its UNet, kohya name
SD1 = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
SD1_TE = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
# the tiny SDXL model (core.models.tiny_sdxl): a 64-wide attention layer, kohya SGM name
SDXL = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
HUGE_HEADER_BYTES = 100 * 1024 * 1024 + 64  # a 100 MB JSON header, just past the format's limit


@dataclass(frozen=True)
class BadFile:
    """One corpus entry. `name` is its file (or folder) name under its folder.

    says: fragments the refusal must hold, besides the file's name (none: any StudioError with
          a fix will do). base: the tiny model the LoRA is refused on ("sd1" / "sdxl"); a LoRA
          with `base` set is a good file that does not fit that model, so only the commands
          that load a model (generate, fuse) can refuse it. test_time: written at test time.
    """

    name: str
    problem: str
    says: tuple[str, ...] = ()
    base: str | None = None
    test_time: bool = False
    payload: bool = False  # a pickle whose unpickling would create the sentinel file

    @property
    def id(self) -> str:
        return self.name.replace(".", "_")


BAD_LORAS = (
    BadFile("truncated.safetensors", "a LoRA cut off mid-download", ("truncated",)),
    BadFile("random_bytes.safetensors", "random bytes", ("not a safetensors file",)),
    BadFile("png_renamed.safetensors", "a PNG renamed .safetensors", ("PNG image",)),
    BadFile("empty.safetensors", "an empty file", ("empty",)),
    BadFile("header_claims_more.safetensors", "a header longer than the file",
            ("truncated", "claims 5000 bytes")),
    BadFile("header_not_json.safetensors", "a header that is not JSON", ("not valid JSON",)),
    BadFile("header_entry_malformed.safetensors", "a tensor entry without a real offset",
            ("malformed", "data_offsets")),
    # refused at load, naming the layer and the tensor: such a LoRA renders black images
    # silently in AUTOMATIC1111
    BadFile("nan_weights.safetensors", "NaN in a lora_up weight",
            ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q has NaN in its up "
             "weight",)),
    BadFile("inf_weights.safetensors", "infinity in a lora_down weight",
            ("text_encoder.encoder.layers.0.self_attn.q_proj has infinite values in its down "
             "weight",)),
    BadFile("nan_alpha.safetensors", "a NaN alpha", ("has NaN in its alpha",)),
    BadFile("ia3.safetensors", "a LyCORIS (IA)3 (on_input)"),
    BadFile("model_checkpoint.safetensors", "a base model chosen as a LoRA",
            ("full model checkpoint",)),
    BadFile("wrong_shapes.safetensors", "rank 4, but 48-wide where the tiny model is 32",
            ("does not fit", "48->48"), base="sd1"),
    BadFile("sdxl_lora.safetensors", "an SDXL LoRA", ("made for SDXL", "SD 1.x"), base="sd1"),
    BadFile("sd1_lora.safetensors", "an SD 1.x LoRA", ("made for SD 1.x", "SDXL"), base="sdxl"),
    BadFile("payload.pt", "a pickled LoRA (torch.save zip) with a payload",
            ("not a safetensors file", "pickled"), test_time=True, payload=True),
    BadFile("payload.bin", "a pickled LoRA (plain pickle) with a payload",
            ("not a safetensors file", "pickled"), test_time=True, payload=True),
    BadFile("payload_renamed.safetensors", "a pickle with a payload renamed .safetensors",
            ("not a safetensors file", "pickled"), test_time=True, payload=True),
    BadFile("huge_header.safetensors", "a 100 MB JSON header", ("header", "100 MB"),
            test_time=True),
)

# good LyCORIS files: inspect, generate, merge, fuse and resize take them, convert refuses them
LYCORIS_LORAS = tuple(
    BadFile(f"{name}.safetensors", problem,
            (f"is a LyCORIS {kind} file", "convert re-saves plain LoRA/LoCon files only"))
    for name, kind, problem in (("loha", "LoHa", "a LyCORIS LoHa (hada_*)"),
                                ("lokr", "LoKr", "a LyCORIS LoKr (lokr_*)"),
                                ("full_diff", "full-difference",
                                 "a LyCORIS full-difference (diff / diff_b)")))
PLAIN_LORA_COMMANDS = ("convert",)

BAD_MODELS = (
    BadFile("payload.ckpt", "a pickle checkpoint (torch.save zip) with a payload",
            ("refused to open it", ".safetensors"), test_time=True, payload=True),
    BadFile("payload.pt", "a plain pickle with a payload",
            ("refused to open it", ".safetensors"), test_time=True, payload=True),
    BadFile("random_bytes.ckpt", "random bytes named .ckpt",
            ("not a readable PyTorch checkpoint",)),
    BadFile("truncated.safetensors", "a checkpoint cut off mid-download", ("truncated",)),
    BadFile("unknown_arch.safetensors", "tensors of no model LoRA Studio knows",
            ("not a Stable Diffusion",)),
    BadFile("empty.safetensors", "an empty file", ("empty",)),
    BadFile("empty_folder", "an empty folder", ("model_index.json",), test_time=True),
    BadFile("not_a_model_folder", "a folder of notes", ("not a diffusers model",)),
    BadFile("damaged_model_folder", "model_index.json and nothing else", ("unet",)),
)


def bad_lora(name: str) -> BadFile:
    return next(entry for entry in BAD_LORAS if entry.name == name)


# ----------------------------------------------------------------------------- helpers
def _save(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)


def _kohya(stem: str, width: int, rank: int = 4, out: int | None = None) -> dict:
    import torch

    return {f"{stem}.lora_down.weight": torch.randn(rank, width) * 0.1,
            f"{stem}.lora_up.weight": torch.randn(out or width, rank) * 0.1,
            f"{stem}.alpha": torch.tensor(float(rank))}


def good_sd1_tensors() -> dict:
    """A plain kohya LoRA that fits the tiny SD 1.x model (UNet and text encoder)."""
    return {**_kohya(SD1, 32), **_kohya(SD1_TE, 32)}


def _header_file(path: Path, header: bytes, claimed: int | None = None,
                 data: bytes = b"") -> None:
    length = len(header) if claimed is None else claimed
    path.write_bytes(struct.pack("<Q", length) + header + data)


_ENTRY = b'{"%s.lora_down.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": %s}}'


# ----------------------------------------------------------------------------- LoRA files
def _lora_writers() -> dict:
    import torch

    def truncated(path):
        _save(path, good_sd1_tensors())
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 3 // 5])

    def png(path):
        from PIL import Image

        Image.new("RGB", (8, 8), (200, 40, 40)).save(path, format="PNG")

    def nan(path):
        tensors = good_sd1_tensors()
        tensors[f"{SD1}.lora_up.weight"][3, 1] = float("nan")
        _save(path, tensors)

    def inf(path):
        tensors = good_sd1_tensors()
        tensors[f"{SD1_TE}.lora_down.weight"][0, 5] = float("inf")
        _save(path, tensors)

    def nan_alpha(path):
        tensors = good_sd1_tensors()
        tensors[f"{SD1}.alpha"] = torch.tensor(float("nan"))
        _save(path, tensors)

    def kind(**suffixes):
        return lambda path: _save(path, {f"{SD1}.{k}": v for k, v in suffixes.items()})

    r = torch.randn
    return {
        "truncated.safetensors": truncated,
        "random_bytes.safetensors": lambda p: p.write_bytes(random.Random(22).randbytes(512)),
        "png_renamed.safetensors": png,
        "empty.safetensors": lambda p: p.write_bytes(b""),
        "header_claims_more.safetensors": lambda p: _header_file(
            p, _ENTRY % (SD1.encode(), b"[0, 16]"), claimed=5000, data=b"\0" * 16),
        "header_not_json.safetensors": lambda p: _header_file(
            p, b'{"a.lora_down.weight": {"dtype": "F32", shape: [2, 2]', data=b"\0" * 16),
        "header_entry_malformed.safetensors": lambda p: _header_file(
            p, _ENTRY % (SD1.encode(), b"[0, null]"), data=b"\0" * 16),
        "nan_weights.safetensors": nan,
        "inf_weights.safetensors": inf,
        "nan_alpha.safetensors": nan_alpha,
        "loha.safetensors": kind(hada_w1_a=r(32, 4), hada_w1_b=r(4, 32), hada_w2_a=r(32, 4),
                                 hada_w2_b=r(4, 32), alpha=torch.tensor(4.0)),
        "lokr.safetensors": kind(lokr_w1=r(4, 4), lokr_w2=r(8, 8), alpha=torch.tensor(4.0)),
        "ia3.safetensors": kind(weight=r(32), on_input=torch.tensor(False)),
        "full_diff.safetensors": kind(diff=r(32, 32), diff_b=r(32)),
        "model_checkpoint.safetensors": lambda p: _save(p, {
            "model.diffusion_model.out.2.weight": r(4, 32, 3, 3),
            "first_stage_model.decoder.conv_out.bias": r(3)}),
        "wrong_shapes.safetensors": lambda p: _save(p, _kohya(SD1, 48)),
        "sdxl_lora.safetensors": lambda p: _save(p, _kohya(SDXL, 64), {
            "ss_base_model_version": "sdxl_base_v1-0"}),
        "sd1_lora.safetensors": lambda p: _save(p, good_sd1_tensors(), {
            "ss_base_model_version": "sd_v1"}),
    }


def write_committed_loras(folder: Path = LORAS) -> list[Path]:
    """Write every committed bad LoRA file into `folder` (same seed, same tensors)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(22)
    written = []
    for name, write in _lora_writers().items():
        write(folder / name)
        written.append(folder / name)
    return written


# ----------------------------------------------------------------------------- base models
def write_committed_models(folder: Path = MODELS) -> list[Path]:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(23)
    (folder / "random_bytes.ckpt").write_bytes(random.Random(23).randbytes(512))
    ckpt = {"model.diffusion_model.input_blocks.0.0.weight": torch.randn(32, 4, 3, 3),
            "model.diffusion_model.out.2.weight": torch.randn(4, 32, 3, 3)}
    _save(folder / "truncated.safetensors", ckpt)
    data = (folder / "truncated.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    _save(folder / "unknown_arch.safetensors",
          {"blk.0.attn_q.weight": torch.randn(16, 16), "token_embd.weight": torch.randn(8, 16),
           "x9f3.q_w": torch.randn(16)})
    (folder / "empty.safetensors").write_bytes(b"")
    notes = folder / "not_a_model_folder"
    notes.mkdir(exist_ok=True)
    (notes / "README.txt").write_text("My prompts for the weekend.\n", encoding="utf-8")
    (notes / "config.json").write_text('{"theme": "dark"}\n', encoding="utf-8")
    damaged = folder / "damaged_model_folder"
    damaged.mkdir(exist_ok=True)
    (damaged / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]}, indent=2) + "\n", encoding="utf-8")
    return sorted(folder.iterdir())


# ----------------------------------------------------------------------------- test time
class _Payload:
    """Unpickling this runs `touch SENTINEL` (any code could run there)."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (os.system, (f"touch '{self.sentinel}'",))


def _torch_payload(path: Path, sentinel: Path, weights: dict) -> None:
    import torch

    torch.save({"state_dict": weights, "callback": _Payload(sentinel)}, str(path))


def _pickle_payload(path: Path, sentinel: Path, weights: dict) -> None:
    import pickle

    path.write_bytes(pickle.dumps({"state_dict": weights, "callback": _Payload(sentinel)},
                                  protocol=2))


def _huge_header(path: Path) -> None:
    """A header of HUGE_HEADER_BYTES: one tensor and a metadata value of spaces, all valid
    JSON, written in pieces (never 100 MB in memory)."""
    head = b'{"__metadata__": {"notes": "'
    tail = b'"}, "%s.lora_down.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}' \
        % SD1.encode()
    pad = HUGE_HEADER_BYTES - len(head) - len(tail)
    chunk = b" " * (1 << 20)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", HUGE_HEADER_BYTES) + head)
        for _ in range(pad // len(chunk)):
            handle.write(chunk)
        handle.write(b" " * (pad % len(chunk)) + tail + b"\0" * 4)


def write_test_time_files(loras: Path, models: Path, sentinel: Path, *,
                          huge: bool = True) -> None:
    """Write the entries that are never committed (see the module docstring) into `loras` and
    `models`; unpickling any payload would create `sentinel`. `huge=False` leaves out the
    100 MB file."""
    import torch

    loras.mkdir(parents=True, exist_ok=True)
    models.mkdir(parents=True, exist_ok=True)
    lora = good_sd1_tensors()
    _torch_payload(loras / "payload.pt", sentinel, lora)
    _pickle_payload(loras / "payload.bin", sentinel, lora)
    _pickle_payload(loras / "payload_renamed.safetensors", sentinel, lora)
    if huge:
        _huge_header(loras / "huge_header.safetensors")
    weights = {"model.diffusion_model.out.2.weight": torch.zeros(4, 32, 3, 3)}
    _torch_payload(models / "payload.ckpt", sentinel, weights)
    _pickle_payload(models / "payload.pt", sentinel, weights)
    (models / "empty_folder").mkdir(exist_ok=True)


def corpus(tmp: Path, sentinel: Path, *, huge: bool = True) -> tuple[Path, Path]:
    """(LoRA folder, model folder) holding the whole corpus: the committed files copied into
    `tmp` beside the test-time ones (see `write_test_time_files`)."""
    import shutil

    loras, models = tmp / "loras", tmp / "models"
    shutil.copytree(LORAS, loras)
    shutil.copytree(MODELS, models)
    write_test_time_files(loras, models, sentinel, huge=huge)
    return loras, models


if __name__ == "__main__":
    for written in write_committed_loras() + write_committed_models():
        print(written.relative_to(DATA))
