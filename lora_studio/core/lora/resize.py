"""Resize a LoRA to another rank by SVD, strength preserved: `lora-studio resize`.

Each module's update `(alpha / r) * up @ down` is decomposed and its top singular directions
kept (`merge._rerank`, the same math as a re-ranked merge of one file at weight 1): a fixed
rank (`rank=K`), or per module the smallest rank keeping a share of the update's squared
Frobenius norm (`keep=0.95`, what kohya calls dynamic resizing). The new alpha equals the new
rank, so the file renders at strength 1 what the original renders at strength 1 (exactly when
nothing was dropped). The original metadata (trigger words, training settings) is kept;
`ss_network_dim` / `ss_network_alpha` tell the new ranks and `ss_training_comment` what was done,
and the architecture keys the file lacks are added (`metadata.with_architecture_keys`).

A LyCORIS file (LoHa, LoKr, full-difference, DoRA: `lycoris_read`) is resized the same way into a
plain LoRA: its dense update per module, decomposed by SVD (a DoRA file needs the base model,
`model=`); the kept share says how close the plain LoRA is. Its LyCORIS network settings
(`ss_network_module`, `ss_network_args`) give way to a plain LoRA's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lora_studio.core.errors import LoraFormatError
from lora_studio.core.lora.lycoris import LycorisFile
from lora_studio.core.lora.lycoris_read import read_network
from lora_studio.core.lora.merge import MergeResult, merge_loras
from lora_studio.core.lora.metadata import with_architecture_keys


def resize_lora(source: str | os.PathLike[str], *, rank: int | None = None,
                keep: float | None = None, model: Any = None) -> MergeResult:
    """The resized LoRA (in `.lora`) with the share kept per module and overall. `model`: the
    base model (a spec or pipeline), needed for a DoRA file."""
    if (rank is None) == (keep is None):
        raise LoraFormatError("Say how to resize: a rank (--rank 16) or a share to keep "
                              "(--keep 0.95).")
    original = read_network(source)
    # by path (read again, small), so that what the merge says names the file
    result = merge_loras([(source, 1.0)], rank=rank, keep=keep, model=model)
    meta = dict(original.metadata)  # write_lora recomputes the hashes and layout keys
    if isinstance(original, LycorisFile):  # now a plain LoRA
        meta.pop("ss_network_args", None)
        meta["ss_network_module"] = "networks.lora"
    how = f"rank {rank}" if rank is not None else f"keeping {100 * keep:g} % per module"
    comment = f"Resized by SVD ({how}) from {Path(source).name}; kept " \
              f"{100 * result.overall_retained:.2f} % of the update"
    earlier = original.metadata.get("ss_training_comment")
    meta.update({
        "ss_network_dim": result.lora.metadata["ss_network_dim"],
        "ss_network_alpha": result.lora.metadata["ss_network_alpha"],
        "ss_training_comment": f"{earlier}; {comment}" if earlier else comment,
    })
    result.lora.metadata = with_architecture_keys(meta, result.lora.arch)
    return result
