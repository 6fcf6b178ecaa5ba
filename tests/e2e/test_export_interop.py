"""The file we export is the LoRA we trained: plain diffusers, in a fresh process, loading our
kohya-layout file renders the same image as the adapter that was trained in memory.

Trained with alpha != rank (alpha 1, rank 4: kohya's own default alpha), so a writer or loader
that assumed alpha = rank would change the LoRA's strength and fail here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from lora_studio.core import events as ev
from lora_studio.core.jobs import JobControl
from lora_studio.core.train.config import config_from_dict
from lora_studio.core.train.trainer import run_training_job
from lora_studio.core.paths import sample_dataset_dir

PROMPT = "zqstar, a large red star on a white background"

# Runs in a fresh interpreter: nothing of LoRA Studio is imported there.
PLAIN_DIFFUSERS = r"""
import json, sys
import numpy as np, torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
from safetensors.torch import load_file, save_file

model, lora, alpha_as_rank, out = sys.argv[1:5]
pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None,
                                               requires_safety_checker=False)
pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
pipe.set_progress_bar_config(disable=True)

def render():
    image = pipe("zqstar, a large red star on a white background", num_inference_steps=4, guidance_scale=4.0, height=32, width=32,
                 generator=torch.Generator().manual_seed(11)).images[0]
    return np.asarray(image, dtype=np.int16).tolist()

images = {"base": render()}
pipe.load_lora_weights(lora, adapter_name="ours")
images["lora"] = render()
pipe.unload_lora_weights()

# The same file with every alpha rewritten to the rank: what diffusers' own kohya converter does.
tensors = load_file(lora)
for key in [k for k in tensors if k.endswith(".alpha")]:
    rank = tensors[key.replace(".alpha", ".lora_down.weight")].shape[0]
    tensors[key] = torch.tensor(float(rank), dtype=tensors[key].dtype)
save_file(tensors, alpha_as_rank)
pipe.load_lora_weights(alpha_as_rank, adapter_name="alpha_as_rank")
images["alpha_as_rank"] = render()
json.dump(images, open(out, "w"))
"""


def test_kohya_export_in_plain_diffusers_matches_the_adapter_trained_in_memory(
        tiny_model_dir, tmp_path):
    data = sample_dataset_dir()
    cfg = config_from_dict({
        "model": {"base": str(tiny_model_dir)},
        "dataset": {"path": str(data), "resolution": 32, "default_caption": "zqstar"},
        "lora": {"rank": 4, "alpha": 1.0, "targets": "attention+mlp"},
        "train": {"steps": 6, "learning_rate": 5e-2, "seed": 5},
        # The last preview is rendered by the in-memory adapter, at the end of training.
        "sample": {"every": 6, "prompts": [PROMPT], "steps": 4, "cfg": 4.0, "seed": 11,
                   "sampler": "Euler"},
        "output": {"path": str(tmp_path / "out"), "name": "interop", "format": "kohya",
                   "save_precision": "fp32"},
    })
    events: list = []
    run_training_job(cfg, events.append, JobControl())
    assert isinstance(events[-1], ev.Finished), events[-1]
    in_memory = np.asarray([e for e in events if isinstance(e, ev.Preview)][-1].image,
                           dtype=np.int16)

    out_json = tmp_path / "images.json"
    subprocess.run([sys.executable, "-c", PLAIN_DIFFUSERS, str(tiny_model_dir),
                    str(cfg.lora_path), str(tmp_path / "alpha_as_rank.safetensors"),
                    str(out_json)],
                   check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    images = {k: np.asarray(v, dtype=np.int16) for k, v in json.loads(out_json.read_text()).items()}

    # The LoRA does something visible, and the exported file reproduces it exactly (8-bit PNG
    # rounding aside)...
    assert np.abs(images["lora"] - images["base"]).mean() > 3
    assert np.abs(images["lora"] - in_memory).max() <= 2
    # ...which a file whose alphas were reset to the rank (4x the strength here) would not.
    assert np.abs(images["alpha_as_rank"] - in_memory).mean() > 3
