"""Benchmark: when should a stacked texture LoRA come in? A star LoRA and a stripes LoRA at 1.0
each, the stripes LoRA starting at several shares of the steps (the Mix tab's "Starts at").

Run:  HF_HUB_OFFLINE=1 python tests/benchmarks/tiny_shapes_lora_compose.py   (~10 min, 2 cores)

Both LoRAs are trained side by side by `lora-studio train` with the quickstart preset: the star
on the shipped sample (its reg pictures and timestep range), the stripes on the striped-shapes
set without reg pictures on timesteps 0-400 (`tests/tiny_shapes_loras.stripes_settings`). Then
the studio's session renders "zqstar, zqstripe, a large red striped star on ..." (15 prompts x
seeds 0-3, 20 Euler steps, guidance 5) and the scorer reads star / striped / both.
Measured (one thread per training, the weights the e2e test gets):

    stripes start   0     0.3   0.4   0.5   0.6   0.75
    both            0.48  0.58  0.62  0.63  0.55  0.35
    star            0.58  0.75  0.78  0.80  0.78  0.87
    striped         0.75  0.73  0.73  0.73  0.63  0.35

From the first step the stripes LoRA (trained on circles, squares and triangles) pulls the
star's outline toward its shapes; from half the steps the star is laid out before the stripes
come in (tests/e2e/test_tiny_shapes_lora.py checks 0.5). Later than that, too few steps are
left to draw the stripes. Other second concepts tried, scored alike: dots on the background
(the star fell to 0.27-0.35) and a navy background (the navy LoRA tinted the background with
the shape's color: navy alone in 0.13 of seeds). Not collected by pytest.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: tiny_shapes_loras

STARTS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.75)
SEEDS = (0, 1, 2, 3)


def main() -> None:
    from lora_studio.core.models.tiny_shapes import quality, sample_data
    from tiny_shapes_loras import (adapter_name, finish_training, start_training,
                                   stripes_settings, studio_render, studio_session, use_only)

    root = Path(tempfile.mkdtemp(prefix="lora_studio_compose_"))
    data = sample_data.write_concept_dataset(root / "stripes_data", "stripes")
    runs = {"zqstar": start_training(root / "star"),
            "zqstripe": start_training(root / "stripes", *stripes_settings(data))}
    files = [finish_training(runs["zqstar"], root / "star", "zqstar"),
             finish_training(runs["zqstripe"], root / "stripes", "zqstripe")]
    session = studio_session()
    star, stripes = (adapter_name(session, f) for f in files)
    use_only(session, {star: 1.0, stripes: 1.0})
    scenes = quality.concept_test_scenes("star", texture="striped",
                                         sizes=sample_data.CONCEPTS["star"].sizes)
    prompts = [f"zqstar, zqstripe, {s.caption()}" for s in scenes]
    print("stripes start | both | star | striped")
    for start in STARTS:
        session.set_start(stripes, start)
        report = quality.score(scenes, studio_render(session, prompts, SEEDS), len(SEEDS),
                               texture=True)
        print(f"{start:13.2f} | {quality.concept_rate(report, 'star', 'striped'):.2f} | "
              f"{quality.concept_rate(report, 'star'):.2f} | "
              f"{quality.concept_rate(report, None, 'striped'):.2f}", flush=True)


if __name__ == "__main__":
    main()
