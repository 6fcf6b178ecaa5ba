"""The LoRA training loop: one readable, linear file.

`train(config, emit, control)` trains a LoRA on a Stable Diffusion UNet (and optionally its text
encoders) and returns a `TrainResult`; `run_training_job` wraps it so a job always ends in
exactly one Finished / Failed / Cancelled event. What differs between model families (SD 1.x /
2.x, SDXL) is asked of the loaded `families.ModelFamily`; nothing here names a family.
Read top to bottom:

  1. accelerate + device      the Accelerator owns device, mixed precision, accumulation, DDP
  2. dataset                  check_dataset; skipped files are warnings, never fatal
  3. base model               its family, loaded once, frozen, in the run's weight dtype
  4. LoRA                     peft adapters on the UNet (and text encoders); only they train
  5. optimizer + schedule     the trainable parameters are a *list* (clipping must see them)
  6. caches                   VAE latents / text embeddings once per image, keyed by index
  7. resume                   accelerate state + our step, data position and noise generator
  8. loop                     sample → noise → predict → fp32 loss → backward → clip → step
  9. export                   the LoRA (kohya layout + metadata) via lora_studio.core.lora

Runs unchanged on one CPU, one GPU or many processes (`accelerate launch -m lora_studio train
CONFIG`): every process trains on its own slice of each step's samples, gradients are averaged
by DDP, and only the main process writes files and emits events.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lora_studio.core import events as ev
from lora_studio.core.errors import ConfigError, StudioError
from lora_studio.core.jobs import JobControl, run_job
from lora_studio.core.train.config import TrainConfig, save_config
from lora_studio.core.train.objective import step_loss  # noqa: F401 (validation's too)


@dataclass
class TrainResult:
    lora_path: Path | None  # the LoRA file written last (the final one, or on cancel)
    steps_done: int
    total_steps: int
    cancelled: bool = False
    outputs: list[Path] = field(default_factory=list)  # every file written (LoRAs, config)
    last_checkpoint: Path | None = None
    final_loss: float | None = None


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def run_training_job(config: TrainConfig, emit: ev.Emit, control: JobControl | None = None,
                     resume_from: str | Path | None = None) -> ev.Event:
    """Run `train` and emit exactly one terminal event (Finished, Failed or Cancelled), which is
    also returned. Never raises for a training failure: Failed carries the message a person can
    act on (StudioError.user_message()) and the traceback in `details`."""
    return run_training_job_with_code(config, emit, control, resume_from)[0]


def run_training_job_with_code(config: TrainConfig, emit: ev.Emit,
                               control: JobControl | None = None,
                               resume_from: str | Path | None = None) -> tuple[ev.Event, int]:
    """`run_training_job`, also returning the CLI exit code (0, 1, 2 or 130): `jobs.run_job`
    around `train`, with the training run's own words for how it ended."""
    say = emit if _is_main_process() else (lambda event: None)
    if _is_main_process():
        say = _logged_in_run_folder(config, say)
    outcome = run_job(lambda emit_, control_: _train_ending_cleanly(config, emit_, control_,
                                                                    resume_from),
                      say, control, ending=_training_ending, doing="Training",
                      interrupted="Training aborted; nothing was saved after the last LoRA or "
                                  "checkpoint written.")
    # The run's models go now, not at some later full collection: the app trains run after
    # run in one process, and a model something still holds in a reference cycle (in a
    # process's first run, the frames of torch's lazy imports keep `train`'s frame) would sit
    # beside the next run's, in RAM and on the GPU.
    gc.collect()
    return outcome.terminal, outcome.code


def _logged_in_run_folder(config: TrainConfig, emit: ev.Emit) -> ev.Emit:
    """`emit`, also appending every event to the run folder's events.jsonl (and the folder to
    the studio's list of runs); `emit` alone when the config names no usable folder."""
    from lora_studio.core.errors import ConfigError as InvalidConfig
    from lora_studio.core.train.runs import EventLog, remember_run

    try:
        folder = config.validate().output_dir
        folder.mkdir(parents=True, exist_ok=True)
        remember_run(folder)
    except (InvalidConfig, OSError):
        return emit  # the run itself reports the problem
    log = EventLog(folder)

    def both(event: ev.Event) -> None:
        log(event)
        emit(event)

    return both


def _train_ending_cleanly(config: TrainConfig, emit: ev.Emit, control: JobControl,
                          resume_from: str | Path | None) -> TrainResult:
    """`train`; a GPU out-of-memory error becomes a StudioError saying the step reached, where
    the LoRA so far was saved and which settings lower memory (`out_of_memory.py`)."""
    from lora_studio.core.train.out_of_memory import (RunSoFar, is_out_of_memory,
                                                      out_of_memory_error,
                                                      save_after_out_of_memory)

    so_far = RunSoFar()
    try:
        return train(config, emit, control, resume_from, so_far=so_far)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        saved, problem = save_after_out_of_memory(exc, so_far)
        raise out_of_memory_error(config, so_far, saved, problem) from None


def _training_ending(result: TrainResult, control: JobControl) -> ev.Event:
    if result.cancelled:
        where = f" The LoRA trained so far is saved at {result.lora_path}." \
            if result.lora_path else ""
        resume = f" Continue with --resume {result.last_checkpoint}." \
            if result.last_checkpoint else ""
        return ev.Cancelled(message=f"Training cancelled at step {result.steps_done} of "
                            f"{result.total_steps}.{where}{resume}", outputs=list(result.outputs))
    return ev.Finished(result=result, outputs=list(result.outputs),
                       message=f"Training finished: {result.total_steps} steps. "
                               f"LoRA saved at {result.lora_path}.")


def train(config: TrainConfig, emit: ev.Emit, control: JobControl | None = None,
          resume_from: str | Path | None = None, so_far=None) -> TrainResult:
    """Train a LoRA as `config` says, reporting through `emit`, steered by `control`; `so_far`
    (an `out_of_memory.RunSoFar`) is kept current for whoever must end the run early.
    What the run opens (the TensorBoard writer and its thread) is closed however it ends: the
    app trains many runs in one process, and a failed run must leave nothing running."""
    with contextlib.ExitStack() as cleanup:
        return _train(config, emit, control, resume_from, so_far, cleanup)


def _train(config: TrainConfig, emit: ev.Emit, control: JobControl | None,
           resume_from: str | Path | None, so_far, cleanup: contextlib.ExitStack) -> TrainResult:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    from lora_studio.core.train import checkpoint as ckpt
    from lora_studio.core.train import tracking
    from lora_studio.core.train.data import (latent_distribution, prepare_training_set,
                                             sample_latents, without_trigger)
    from lora_studio.core.train.device import configure_backends, select_device
    from lora_studio.core.train.eta import Eta
    from lora_studio.core.train.export import training_metadata
    from lora_studio.core.train.families import Conditioning, load_family
    from lora_studio.core.train.overfit import check_overfitting
    from lora_studio.core.train.optimizers import learning_rate_warning, make_optimizer
    from lora_studio.core.train.preview import render_previews

    control = control or JobControl()
    cfg = config.validate()
    d, lo, tr, out = cfg.dataset, cfg.lora, cfg.train, cfg.output
    started_at = time.time()

    # ------------------------------------------------------------------ 1. accelerate + device
    choice = select_device(tr.device, tr.mixed_precision)
    configure_backends(choice)
    tracking.check_available(tr.log_with)  # before any model loads
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        AcceleratorState._reset_state(True)  # a fresh state per run inside one process (app)
    accelerator = Accelerator(cpu=choice.use_cpu, mixed_precision=tr.mixed_precision,
                              gradient_accumulation_steps=tr.gradient_accumulation)
    is_main = accelerator.is_main_process
    say = emit if is_main else (lambda event: None)
    for note in choice.notes:
        say(ev.Log(note, level="warning"))
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    weight_dtype = getattr(torch, choice.weight_dtype_name)
    set_seed(tr.seed)  # same LoRA initialisation on every process and every run

    # ------------------------------------------------------------------ 2. dataset
    # Folders and repeats, buckets, captions and the epoch arithmetic: the plan `dataset check`
    # prints, said here too. Skipped files are warnings, never fatal.
    def stop_if_cancelled(doing: str) -> None:
        # Set-up has no step loop to return from: a cancel lands between its pieces (one
        # process only: with several, every process must leave at the same collective).
        if world == 1:
            control.stop_if_cancelled(f"Training cancelled while {doing}, before its first "
                                      "step: nothing was trained or saved.")

    dataset = prepare_training_set(cfg, world, lambda text, level: say(ev.Log(text, level=level)),
                                   between=lambda: stop_if_cancelled("checking the dataset"))
    examples, reg, order, data = dataset.examples, dataset.reg, dataset.order, dataset.data
    num_train_images, total_steps = dataset.num_train_images, dataset.plan.total_steps

    # ------------------------------------------------------------------ 3. base model
    # The model family (SD 1.x / 2.x, SDXL) supplies everything that differs between them.
    # The frozen base is loaded in the run's weight dtype whatever precision it was saved in
    # (an fp16 folder trained in fp32 must not keep fp16 text encoders).
    stop_if_cancelled("checking the dataset")
    base_spec = None if cfg.model.base in ("", "tiny") else cfg.model.base
    with accelerator.main_process_first():  # the main process creates the built-in model once
        family = load_family(base_spec, torch_dtype=weight_dtype,
                             config_dir=cfg.model.config_dir or None)
    source = family.source
    stop_if_cancelled("loading the base model")
    if so_far is not None:
        so_far.model = source
    for network in (*family.networks().values(), family.vae):
        network.requires_grad_(False)
    for network in family.networks().values():
        _move(network, device, weight_dtype)
    _move(family.vae, device, family.vae_dtype(weight_dtype))
    objective = family.objective(tr)

    # ------------------------------------------------------------------ 4. LoRA adapters
    # peft adapters on the UNet (and the text encoders); every trainable LoRA parameter in
    # fp32 whatever the frozen weights' precision (fp16 LoRA weights NaN within steps).
    trained = family.trained_networks(lo.train_text_encoder)
    for component, network in trained.items():
        _add_lora(network, component, cfg)
    cast_training_params(list(trained.values()), dtype=torch.float32)
    if tr.gradient_checkpointing:
        for component, network in trained.items():
            if component == "unet":
                network.enable_gradient_checkpointing()
            else:
                network.gradient_checkpointing_enable()

    # ------------------------------------------------------------------ 5. optimizer + schedule
    # Lists, not filter() iterators: the optimizer would consume an iterator and gradient
    # clipping below would then see no parameters at all (REFERENCE §5).
    params = {c: [p for p in n.parameters() if p.requires_grad] for c, n in trained.items()}
    unet_params = params.pop("unet")
    te_params = [p for group in params.values() for p in group]
    trainable = unet_params + te_params
    te_lr = lo.text_encoder_lr or tr.learning_rate
    groups = [{"params": unet_params, "lr": tr.learning_rate}]
    if te_params:
        groups.append({"params": te_params, "lr": te_lr})
    optimizer = make_optimizer(tr.optimizer, groups, tr.learning_rate, tr.weight_decay,
                               choice.kind)
    warning = learning_rate_warning(tr.optimizer, tr.learning_rate)
    if warning:
        say(ev.Log(warning, level="warning"))
    # Not passed to accelerator.prepare: it steps once per optimizer step whatever the number
    # of processes, and its state goes to our JSON (accelerate would pickle it).
    lr_scheduler = get_scheduler(tr.lr_scheduler, optimizer, num_warmup_steps=tr.warmup_steps,
                                 num_training_steps=total_steps)
    *prepared, optimizer = accelerator.prepare(*trained.values(), optimizer)
    for component, network in zip(list(trained), prepared):
        family.replace(component, network)
    trained_models = tuple(prepared)
    components = list(trained)  # "unet", "text_encoder", "text_encoder_2"

    def lora_state() -> dict[str, torch.Tensor]:
        nets = family.networks()
        return {f"{c}.{k}": v for c in components for k, v in
                get_peft_model_state_dict(accelerator.unwrap_model(nets[c])).items()}

    # accelerate checkpoints hold the LoRA weights only, never the multi-GB frozen base.
    def save_hook(models, weights, output_dir):
        if is_main:
            save_file({k: v.detach().cpu().contiguous() for k, v in lora_state().items()},
                      str(Path(output_dir) / ckpt.LORA_STATE_FILE))
        weights.clear()

    def load_hook(models, input_dir):
        state = load_file(str(Path(input_dir) / ckpt.LORA_STATE_FILE))
        for component, network in family.networks().items():
            prefix = component + "."
            part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if part:
                result = set_peft_model_state_dict(accelerator.unwrap_model(network), part)
                if getattr(result, "unexpected_keys", None):
                    raise StudioError("This checkpoint does not match the LoRA settings "
                                      "(lora.rank / lora.targets changed?).",
                                      "Resume with the settings of the run that wrote it.")
        models.clear()

    # The hooks hold the accelerator (lora_state) and it holds them: removed when the run ends,
    # so the run's models go the moment it returns, not at the next full garbage collection.
    cleanup.callback(accelerator.register_save_state_pre_hook(save_hook).remove)
    cleanup.callback(accelerator.register_load_state_pre_hook(load_hook).remove)

    # ------------------------------------------------------------------ 6. caches
    # Caption conditioning can be cached only when neither the text encoders nor the caption
    # text (kohya's shuffle / dropout options) changes from step to step.
    def encode(captions: list[str]) -> Conditioning:
        return family.encode(captions, d.max_token_length)

    captions_vary = cfg.caption_options().varies_per_step
    cache_text = tr.cache_latents and not lo.train_text_encoder and not captions_vary
    if tr.cache_latents:
        flips = (False, True) if d.random_flip else (False,)
        say(ev.Log(f"Caching the latents of {len(examples)} images..."))
        data.cache_latents(family.vae, flips,
                           between=lambda: stop_if_cancelled("caching the latents"))
        if cache_text:
            data.cache_text(encode, trigger=d.trigger_word if tr.preserve_base else None,
                            between=lambda: stop_if_cancelled("caching the captions"))
        why = ("the text encoder is being trained" if lo.train_text_encoder
               else cfg.caption_options().why_uncached())
        say(ev.Log(f"Cached the latents of {len(examples)} images ({len(data.latents)} "
                   f"encodings, {len(set(order.buckets.values()))} bucket "
                   f"size(s))" + (" and their caption embeddings." if cache_text else
                                  f"; captions are encoded every step because {why}.")))

    # ------------------------------------------------------------------ 7. resume
    # A dedicated generator for latent sampling, noise and timesteps: its state is saved in
    # checkpoints, so a resumed run draws exactly what an unbroken run would have drawn.
    noise_gen = torch.Generator(device=device).manual_seed(tr.seed + 1_000_003 * (rank + 1))
    start_step = 0
    stop_if_cancelled("setting up")
    if resume_from is not None:
        resume_from = Path(resume_from)
        state = ckpt.read_trainer_state(resume_from)
        if state.get("seed") != tr.seed:
            say(ev.Log(f"Resuming a run trained with seed {state.get('seed')} using seed "
                       f"{tr.seed}: the data order will differ.", level="warning"))
        accelerator.load_state(str(resume_from))
        ckpt.load_noise_generator(resume_from, rank, noise_gen)
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        start_step = int(state["step"])
        if start_step >= total_steps:
            raise ConfigError("train.steps", f"is {total_steps}, but the checkpoint is already at "
                              f"step {start_step}", "Raise train.steps to train further.")
        say(ev.Log(f"Resumed from {resume_from} at step {start_step}."))

    if is_main:
        cfg.output_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, cfg.config_copy_path)
    outputs: list[Path] = [cfg.config_copy_path]
    batches_per_step = tr.gradient_accumulation * world  # every process draws its own batch

    saved_at: dict[int, Path] = {}  # step -> the LoRA file written at that step

    def write_step_lora(path: Path, step: int) -> Path:
        """The LoRA as trained so far, as a file (layout, precision and training metadata)."""
        from lora_studio.core.lora.formats import write_lora

        lora = family.lora_file(accelerator.unwrap_model, lo.train_text_encoder)
        lora.metadata = training_metadata(
            cfg, dataset, arch=source.arch, base_model_name=source.name, step=step,
            epochs=order.epoch_of_batch(max(step * batches_per_step - 1, 0)) + 1,
            started_at=started_at)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
        write_lora(lora, path, layout=out.format, dtype=dtype[out.save_precision])
        return path

    def export_lora(path: Path, step: int, final: bool) -> Path:
        """Save the LoRA as trained so far (main process), with its A1111 card (`<name>.json`:
        the trigger phrase as activation text; a person's edits kept), and say so."""
        from lora_studio.core.lora.card import sd_version_of, write_card_safely

        saved_at[step] = write_step_lora(path, step)
        outputs.append(path)
        note = write_card_safely(path, activation_text=cfg.trigger_phrase() or "",
                                 sd_version=sd_version_of(source.arch))
        if note:
            say(ev.Log(note, level="warning"))
        say(ev.LoraSaved(step=step, path=path, final=final))
        return path

    def previews(step: int) -> None:
        """Render the sample prompts with this step's LoRA file, as Generate would: the file
        saved at this step, or the same file written aside for the previews and removed."""
        if not (is_main and cfg.sample.prompts):
            return
        aside = None
        if step not in saved_at:
            aside = write_step_lora(cfg.output_dir / ".preview" / f"{out.name}.safetensors",
                                    step)
        try:
            for preview in render_previews(cfg, step, family, saved_at.get(step, aside),
                                           unwrap=accelerator.unwrap_model):
                say(preview)
        finally:
            if aside is not None:
                shutil.rmtree(aside.parent, ignore_errors=True)
        for model in trained_models:
            model.train()

    loss_curve: list[tuple[int, float]] = []
    validation_curve: list[tuple[int, float]] = []
    overfit_said: list = []  # said once per run

    def validate(step: int) -> None:
        if dataset.validation is None or not is_main:
            return
        from lora_studio.core.train.validation import validation_loss

        for model in trained_models:
            model.eval()  # no dropout: the same weights give the same value
        loss = validation_loss(family, objective, data, dataset.validation, encode=encode,
                               cached_text=cache_text, device=device, dtype=weight_dtype,
                               seed=tr.seed)
        for model in trained_models:
            model.train()
        say(ev.Validation(step=step, loss=loss, images=len(dataset.validation.examples)))
        validation_curve.append((step, loss))
        alert = check_overfitting(loss_curve, validation_curve)
        if alert is not None and not overfit_said:
            overfit_said.append(alert)
            say(ev.Overfitting(step=step, best_step=alert.best_step, message=alert.message,
                               advice=alert.advice))
        if board is not None:
            board.validation(step, loss)

    def diverged(step: int, what: str) -> None:
        """Save the last good LoRA; stop (CLI), or pause until the person chooses (app)."""
        good = step - 1
        path = export_lora(cfg.lora_path, good, final=False) if is_main else cfg.lora_path
        message = (f"Training diverged at step {step}: {what}. That step's update was not "
                   f"applied; the LoRA of step {good}, the last good one, is saved at {path}.")
        advice = ("Lower train.learning_rate (e.g. to half), use mixed_precision = \"bf16\" "
                  "instead of \"fp16\", or set train.max_grad_norm (e.g. 1.0), and resume.")
        if not control.pause_on_divergence:
            raise StudioError(message, advice)
        control.pause()  # before saying so: whoever hears it may resume at once
        say(ev.Diverged(step=step, message=message, advice=advice, lora_path=path))
        control.wait_if_paused()
        scale = control.take_lr_scale()
        if scale:
            for group in optimizer.param_groups:
                group["lr"] *= scale
            lr_scheduler.base_lrs = [lr * scale for lr in lr_scheduler.base_lrs]
            say(ev.Log(f"Learning rate scaled by {scale:g}; training goes on from step "
                       f"{step}."))

    def checkpoint(step: int) -> Path:
        state = {"step": step, "total_steps": total_steps,
                 "batches_seen": step * batches_per_step,
                 "epoch": order.epoch_of_batch(step * batches_per_step), "seed": tr.seed,
                 "num_processes": world, "lr_scheduler": lr_scheduler.state_dict()}
        path = ckpt.save_checkpoint(accelerator, cfg.output_dir, step, noise_gen, state,
                                    keep=cfg.checkpoint.keep)
        say(ev.CheckpointSaved(step=step, path=path))
        return path

    # ------------------------------------------------------------------ 8. the loop
    reg_note = f" (+ {len(reg.examples)} regularization)" if reg else ""
    say(ev.JobStarted(kind="train", total_steps=total_steps,
                      message=f"Training {out.name} on {num_train_images} images{reg_note} "
                              f"for {total_steps} steps ({choice.name}, {world} process(es))."))
    step, last_checkpoint, last_loss, cancelled = start_step, None, None, False
    if so_far is not None and is_main:  # what an out-of-memory ending reports and saves
        so_far.total_steps, so_far.step = total_steps, lambda: step
        so_far.save = lambda: export_lora(cfg.lora_path, step, final=False)
    last_checkpoint_step = -1
    eta = Eta()  # steps and side work, for the time left
    side_work = {  # kind -> (every N steps before the last, times at the end)
        "previews": (cfg.sample.every if cfg.sample.prompts else 0,
                     1 if cfg.sample.every and cfg.sample.prompts else 0),
        "checkpoint": (cfg.checkpoint.every, 0),
        "lora": (out.save_every, 1),
        "validation": ((tr.validate_every_n_steps or dataset.plan.steps_per_epoch)
                       if dataset.validation else 0, 1 if dataset.validation else 0)}

    def timed(kind: str, work, *args):
        began = time.perf_counter()
        result = work(*args)
        eta.add_side_work(kind, time.perf_counter() - began)
        return result

    board = None
    if tr.log_with == "tensorboard" and is_main:
        board = tracking.TensorboardLog(cfg.output_dir, out.name)
        cleanup.callback(board.close)  # closed after a failed step too
    if start_step == 0:
        validate(0)  # the base model's value: where the curve starts
    for model in trained_models:
        model.train()
    while step < total_steps:
        control.wait_if_paused()
        if _any_process(accelerator, control.cancelled):
            cancelled = True
            break
        tick = time.perf_counter()
        mean_loss, not_finite, grad_norm = 0.0, "", None
        for micro in range(tr.gradient_accumulation):
            # This process's batch of this micro-step: a pure function of the step, all of one
            # bucket (one image size).
            samples = order.batch((step * tr.gradient_accumulation + micro) * world + rank)
            indices = [s.index for s in samples]
            with accelerator.accumulate(*trained_models):
                # Latents: a fresh sample of each image's VAE posterior (cached or encoded now).
                if tr.cache_latents:
                    mean = torch.cat([data.latents[(s.index, s.flip)][0] for s in samples])
                    std = torch.cat([data.latents[(s.index, s.flip)][1] for s in samples])
                else:
                    pixels = torch.stack([data.pixels(s.index, s.flip, s.position)
                                          for s in samples])
                    with torch.no_grad():
                        mean, std = latent_distribution(family.vae, pixels)
                latents = sample_latents(family.vae, mean.to(device), std.to(device), noise_gen)
                # Caption conditioning: cached, or encoded (with gradients when a TE trains);
                # where each image's pixels came from (SDXL's size and crop conditioning).
                if cache_text:
                    cond = Conditioning.cat([data.text[i] for i in indices]).to(device)
                else:
                    captions = [data.sample_caption(s) for s in samples]
                    with torch.set_grad_enabled(lo.train_text_encoder):
                        cond = encode(captions)
                geometry = [data.geometry(s) for s in samples]
                noise, timesteps = objective.draw(latents, noise_gen)
                weights = None
                if reg is not None:  # regularization samples count prior_loss_weight times
                    weights = torch.tensor([tr.prior_loss_weight if examples[i].regularization
                                            else 1.0 for i in indices], device=device)
                loss = step_loss(family, objective, latents, noise, timesteps, cond, geometry,
                                 weight_dtype, weights)  # fp32
                if tr.preserve_base:
                    # Same noisy latents, the captions without the trigger word: the LoRA's
                    # prediction should be the base model's (differential output preservation).
                    noisy = objective.noisy(latents, noise, timesteps)
                    if cache_text:  # frozen text encoders: base and LoRA read them alike
                        kept = Conditioning.cat([data.kept_text[i] for i in indices]).to(device)
                        kept_base = kept
                    else:
                        kept_captions = [without_trigger(c, d.trigger_word) for c in captions]
                        with torch.set_grad_enabled(lo.train_text_encoder):
                            kept = encode(kept_captions)
                    with torch.no_grad(), _base_only(accelerator, trained_models):
                        if not cache_text:
                            kept_base = encode(kept_captions)
                        base_pred = family.predict(noisy, timesteps, kept_base, geometry,
                                                   weight_dtype)
                    kept_pred = family.predict(noisy, timesteps, kept, geometry, weight_dtype)
                    loss = loss + tr.preserve_base * objective.loss(kept_pred, base_pred,
                                                                    timesteps)
                accelerator.backward(loss)
                # The watchdog: a non-finite loss or gradient never reaches the weights (an
                # fp16 GradScaler skips overflowing steps by itself and is left to do so).
                if not torch.isfinite(loss.detach()).all():
                    not_finite = f"the loss became {loss.detach().float().item()}"
                if accelerator.sync_gradients:
                    norm = accelerator.clip_grad_norm_(
                        trainable, tr.max_grad_norm if tr.max_grad_norm > 0 else math.inf)
                    grad_norm = float(norm)
                    if not not_finite and accelerator.scaler is None \
                            and not torch.isfinite(norm).all():
                        not_finite = f"the gradient norm became {float(norm)}"
                    not_finite = _any_process_says(accelerator, not_finite)
                if not not_finite:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            mean_loss += loss.detach().float().item() / tr.gradient_accumulation
        lr_scheduler.step()
        step += 1
        if world > 1:
            mean_loss = accelerator.reduce(torch.tensor(mean_loss, device=device),
                                                "mean").item()
        if not_finite:  # that update was not applied: the weights are still step - 1's
            diverged(step, not_finite)
            continue
        last_loss = mean_loss
        loss_curve.append((step, mean_loss))
        eta.add_step(time.perf_counter() - tick)
        per_step = eta.seconds_per_step
        epoch = order.epoch_of_batch(step * batches_per_step - 1)
        say(ev.StepProgress(step=step, total_steps=total_steps, loss=mean_loss,
                            lr=lr_scheduler.get_last_lr()[0], it_per_s=1.0 / max(per_step, 1e-9),
                            eta_s=eta.remaining(step, total_steps, side_work), epoch=epoch))
        if board is not None:
            board.step(step, mean_loss, lr_scheduler.get_last_lr(), grad_norm)
            if step % tracking.WEIGHT_NORM_EVERY == 0 or step == total_steps:
                board.weight_norms(step, tracking.module_update_norms(lora_state(),
                                                                      lo.alpha / lo.rank))

        # Side work at step boundaries (everything below is outside the timed step).
        epoch_ended = order.epoch_of_batch(step * batches_per_step) > epoch
        if tr.validate_every_n_steps and step % tr.validate_every_n_steps == 0 \
                or not tr.validate_every_n_steps and epoch_ended or step == total_steps:
            timed("validation", validate, step)
        if step == total_steps:
            break
        if is_main and out.save_every_n_epochs and epoch_ended \
                and (epoch + 1) % out.save_every_n_epochs == 0:  # kohya's <name>-000001 files
            export_lora(cfg.output_dir / f"{out.name}-{epoch + 1:06d}.safetensors", step, False)
        if cfg.checkpoint.every and step % cfg.checkpoint.every == 0:
            last_checkpoint, last_checkpoint_step = timed("checkpoint", checkpoint, step), step
        save_now, sample_now = control.take_save_request(), control.take_sample_request()
        if is_main and (save_now or out.save_every and step % out.save_every == 0):
            timed("lora", export_lora, cfg.output_dir / f"{out.name}-step{step}.safetensors",
                  step, False)
        if sample_now or cfg.sample.every and step % cfg.sample.every == 0:
            timed("previews", previews, step)

    # ------------------------------------------------------------------ 9. export
    if cancelled and step > start_step and last_checkpoint_step != step:
        last_checkpoint = checkpoint(step)  # so a cancelled run can be resumed where it stopped
    lora_path = None
    if is_main and (not cancelled or step > 0):
        lora_path = export_lora(cfg.lora_path, step, final=not cancelled)
    if not cancelled and (cfg.sample.every or control.take_sample_request()):
        previews(step)  # the final LoRA's previews (asked for during the last step too)
    if board is not None:
        board.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(lora_path=lora_path, steps_done=step, total_steps=total_steps,
                       cancelled=cancelled, outputs=outputs, last_checkpoint=last_checkpoint,
                       final_loss=last_loss)


def _move(network, device, dtype: torch.dtype) -> None:
    """Put a frozen network on `device` in `dtype` (a dtype cast only where one is needed:
    diffusers warns about casting a model that was loaded in another dtype)."""
    if network.dtype == dtype:
        network.to(device)
    else:
        network.to(device, dtype)


def _add_lora(network, component: str, cfg: TrainConfig) -> None:
    """A peft LoRA adapter on one network, on the layers `lora.targets` names."""
    from peft import LoraConfig

    lo = cfg.lora
    targets = cfg.unet_targets() if component == "unet" else cfg.text_encoder_targets()
    try:
        network.add_adapter(LoraConfig(r=lo.rank, lora_alpha=lo.alpha, lora_dropout=lo.dropout,
                                       init_lora_weights="gaussian", target_modules=targets))
    except ValueError as exc:
        raise ConfigError("lora.targets", f"matches no layer of this {component} ({exc})",
                          "Use \"attention\", \"attention+mlp\" or UNet module names such as "
                          "\"to_q\".") from exc


@contextlib.contextmanager
def _base_only(accelerator, models):
    """The trained models with their LoRA adapters switched off (the frozen base model)."""
    plain = [accelerator.unwrap_model(m) for m in models]
    for model in plain:
        model.disable_adapters()
    try:
        yield
    finally:
        for model in plain:
            model.enable_adapters()


def _any_process_says(accelerator, what: str) -> str:
    """`what`, or a note when another process found something (so all skip the same update)."""
    if accelerator.num_processes == 1:
        return what
    anyone = _any_process(accelerator, bool(what))
    return what or ("a value became non-finite on another process" if anyone else "")


def _any_process(accelerator, flag: bool) -> bool:
    """True when `flag` is set on any process (a cancel reaches every process together)."""
    if accelerator.num_processes == 1:
        return flag
    total = accelerator.reduce(torch.tensor(float(flag), device=accelerator.device), "sum")
    return bool(total.item() > 0)
