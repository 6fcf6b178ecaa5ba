"""`lora-studio tiny-shapes train | eval | dataset`: retrain, measure, and make concept sets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run_train(args: argparse.Namespace) -> int:
    from lora_studio.core.models.tiny_shapes.train import ShapesTrainConfig, train_tiny_shapes

    cfg = ShapesTrainConfig(seed=args.seed, threads=args.threads)
    if args.steps is not None:
        cfg.steps = args.steps
    if args.vae_steps is not None:
        cfg.vae_steps = args.vae_steps
    train_tiny_shapes(args.out, cfg, log=lambda line: print(line, flush=True))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Base quality over every prompt; with --lora, the concept rate per strength too."""
    from lora_studio.core.models.loading import load_pipeline
    from lora_studio.core.models.tiny_shapes import quality

    if args.bleed and args.lora is None:
        from lora_studio.core.errors import StudioError

        raise StudioError("--bleed measures a LoRA, and none was given.",
                          "Give it with --lora FILE.")
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    result: dict = {}
    if args.lora is None:
        report = quality.base_quality(pipe, seeds)
        result["base"] = report.rates
        print(f"base: {report.line()}")
    else:
        from lora_studio.core.lora.apply import load_lora_into_pipeline

        load_lora_into_pipeline(pipe, args.lora, "concept")
        shape = None if args.shape == "any" else args.shape
        texture = None if args.texture == "any" else args.texture
        for strength in [float(s) for s in args.strengths.split(",")]:
            pipe.set_adapters(["concept"], [strength])
            report = quality.concept_quality(pipe, args.trigger, shape or "circle",
                                             texture or "plain", seeds, args.sizes.split(","))
            rate = quality.concept_rate(report, shape, texture)
            result[f"{strength:g}"] = {"concept": rate, **report.rates}
            print(f"strength {strength:g}: concept {rate:.2f}; color {report.rates['color']:.2f}"
                  f", background {report.rates['background']:.2f}")
        if args.bleed:
            result["bleed"] = _bleed(pipe, "concept", seeds)
            print(f"prompts without the trigger, LoRA off: {result['bleed']['off']['all']:.2f} "
                  f"all right; LoRA at 1.0: {result['bleed']['on']['all']:.2f} (kept "
                  f"{result['bleed']['kept']:.2f} of the base quality)")
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def _bleed(pipe, adapter: str, seeds: list[int]) -> dict:
    """How much of the base quality the world's own prompts (no trigger word) keep with the
    LoRA at 1.0: `kept` = all-right rate with the LoRA / without it (1.0 = no bleed)."""
    from lora_studio.core.models.tiny_shapes import quality

    pipe.disable_lora()
    off = quality.base_quality(pipe, seeds).rates
    pipe.enable_lora()
    pipe.set_adapters([adapter], [1.0])
    on = quality.base_quality(pipe, seeds).rates
    return {"off": off, "on": on, "kept": on["all"] / off["all"] if off["all"] else 0.0}


def run_dataset(args: argparse.Namespace) -> int:
    from lora_studio.core.models.tiny_shapes.sample_data import (mirror_safe,
                                                                 write_concept_dataset,
                                                                 write_regularization_set)

    folder = write_concept_dataset(Path(args.out), args.concept, args.count, args.seed)
    print(f"{args.count} images with captions written to {folder}")
    if not mirror_safe(args.concept):
        print(f"Train it with --set dataset.random_flip=false: mirrored {args.concept} are a "
              "different picture, and flipped copies blur the LoRA's version of them.")
    if args.reg is not None:
        reg = write_regularization_set(args.reg, args.reg_count)
        print(f"{args.reg_count} regularization images (the base world, no trigger word) "
              f"written to {reg}: train with --set dataset.reg_path={reg}")
    return 0


def add_parser(sub) -> None:
    from lora_studio.core.models.tiny_shapes.sample_data import (  # cheap
        CONCEPTS,
        REG_COUNT,
        SAMPLE_COUNT,
    )

    p = sub.add_parser("tiny-shapes", help="the built-in Tiny Shapes model: retrain, measure")
    tsub = p.add_subparsers(dest="tiny_command", required=True)
    t = tsub.add_parser("train", help="train the model from scratch (about 80 min on 2 cores)")
    t.add_argument("out", type=Path, help="output folder (diffusers format)")
    t.add_argument("--seed", type=int, default=0, help="same seed, same model")
    t.add_argument("--steps", type=int, default=None, help="UNet steps (default 4600)")
    t.add_argument("--vae-steps", type=int, default=None, help="VAE steps (default 2000)")
    t.add_argument("--threads", type=int, default=2, help="CPU threads (fixed: reproducible)")
    t.set_defaults(handler=run_train)
    e = tsub.add_parser("eval", help="score a model (and a LoRA) on every prompt of the world")
    e.add_argument("model", nargs="?", default=None, help="model folder (default: built-in)")
    e.add_argument("--lora", type=Path, default=None, help="a concept LoRA to measure")
    e.add_argument("--trigger", default="zqstar", help="the LoRA's trigger word")
    e.add_argument("--shape", default="star", help="the shape the LoRA should draw, or 'any'")
    e.add_argument("--texture", default="any", help="the texture it should draw, or 'any'")
    e.add_argument("--strengths", default="0,0.25,0.5,0.75,1,1.25")
    e.add_argument("--sizes", default="large",
                   help="sizes to prompt: large (the sample's stars) or small,large")
    e.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    e.add_argument("--bleed", action="store_true",
                   help="with --lora: also score the world's prompts without the trigger word, "
                        "LoRA off and at 1.0 (how much the LoRA leaks into other prompts; the "
                        "plain fill they ask for counts, so a LoRA that stripes them leaks)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(handler=run_eval)
    d = tsub.add_parser("dataset", help="write a concept dataset (images + captions)")
    d.add_argument("out", type=Path)
    d.add_argument("--concept", choices=list(CONCEPTS), default="star")
    d.add_argument("--count", type=int, default=SAMPLE_COUNT)
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--reg", type=Path, default=None,
                   help="also write regularization images (the base world) to this folder")
    d.add_argument("--reg-count", type=int, default=REG_COUNT)
    d.set_defaults(handler=run_dataset)
