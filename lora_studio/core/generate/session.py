"""A long-lived generation session: one base pipeline, LoRAs on sliders, A1111-style renders.

The base model is loaded once (lazily, on first use). LoRAs are loaded into that pipeline as
named PEFT adapters; switching them on or off calls `set_adapters(names, weights)` (REFERENCE
§5) and a strength change re-scales only that adapter's layers (`adapters.AdapterScales`, the
same numbers), so moving a slider never reloads the model. Disabling a LoRA leaves it out of the
active adapter list, which renders exactly what removing it would.

Conventions (A1111's, so results and PNG info carry over):
- seed None → a random seed, reported in the results; image i of a request uses seed + i, each
  drawn with its own CPU `torch.Generator`, so an image can be re-made alone from its seed on any
  device.
- `<lora:name:w>` tags in the prompt: see `generate.active_loras` (which LoRAs act in a
  render, at which weights, step by step).
- Block weights (`set_block_weights`, `lora.block_weights`): per-block factors on a LoRA's
  strength, applied through diffusers' dict form of `set_adapters` (see `generate.adapters`).
  PNG info writes them into the LoRA's tag as `:lbw=...`, so A1111 users can re-use it.
- width/height None → the model's native size (`unet.sample_size * vae_scale_factor`: 64 for the
  tiny model, 512 SD1, 768 SD2-v, 1024 SDXL).

The stack: `set_stack([StackEntry, ...])` (`generate.stack`) is the one reconciliation of the
session's LoRAs with a wanted list, used by the Mix and Generate tabs, the CLI and the serve API:
it loads, removes, and applies every changed value in one adapter pass. `add_lora`,
`remove_lora` and `set_weight` / `set_enabled` / `set_block_weights` / `set_start` change one
LoRA of it (grids and previews use them).

Threading: `generate`, `add_lora` / `remove_lora` and `set_stack` take the pipeline lock.
`set_stack(..., load=False)` and `set_weight` / `set_enabled` / `set_block_weights` never wait
for a render in progress: they record the values, applied at once when the pipeline is free, or
when the running render ends (a render never changes strengths halfway; the next one starts
with the values recorded by then).
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lora_studio.core import events
from lora_studio.core.errors import ConfigError, LoraFormatError, StudioError
from lora_studio.core.generate import pnginfo
from lora_studio.core.generate.adapters import (
    ActiveAdapter,
    AdapterScales,
    delete_adapter,
    pipe_adapters,
)
from lora_studio.core.generate.preview import step_callback
from lora_studio.core.generate.samplers import make_scheduler, resolve_sampler
from lora_studio.core.generate.active_loras import ActiveLora, active_loras, adapters_at
from lora_studio.core.generate.stack import StackEntry, StackReport, unique_entries
from lora_studio.core.lora.block_weights import BlockWeights
from lora_studio.core.models.architecture import architectures

_ARCH_SIZES = {a.name: a.native_size for a in architectures()}


@dataclass
class GenerationRequest:
    prompt: str
    negative: str = ""
    steps: int = 20
    cfg: float = 7.0
    seed: int | None = None  # None: random (reported in the results)
    width: int | None = None  # None: the model's native size
    height: int | None = None
    sampler: str = "Euler a"  # A1111 name; "DPM++ 2M Karras" or sampler + schedule_type
    schedule_type: str | None = None  # "Karras", "Exponential", ... None = Automatic
    count: int = 1
    out_dir: Path | None = None  # when set, PNGs `<NNNNN>-<seed>.png` with PNG info


@dataclass
class GeneratedImage:
    image: Any  # PIL.Image.Image
    seed: int
    index: int
    parameters: str  # the A1111 `parameters` text
    path: Path | None = None


@dataclass
class SessionLora:
    """A LoRA loaded in the session (a snapshot; change it through the session's methods):
    its adapter name and its stack record (`StackEntry`: path, weight, on/off, block weights,
    start), with what loading it found."""

    name: str  # the adapter name: the handle for set_weight / remove_lora
    entry: StackEntry
    short_hash: str  # A1111's 12-hex LoRA hash ("" when it could not be computed)
    report: Any  # lora.apply.LoadReport
    alias: str | None = None  # ss_output_name from the file's metadata

    path = property(lambda self: self.entry.path)
    weight = property(lambda self: self.entry.weight)
    enabled = property(lambda self: self.entry.enabled)
    # None: every block at `weight`
    block_weights = property(lambda self: self.entry.block_weights)
    # share of the denoising steps before it comes in (0: from the first step). A texture or
    # style LoRA started late leaves the layout to the base and the other LoRAs.
    start = property(lambda self: self.entry.start)

    @property
    def prompt_name(self) -> str:
        """The name A1111 knows it by (file stem), used in `<lora:...>` tags and PNG info."""
        return self.path.stem


@dataclass
class _Render:
    """Everything fixed for one request, resolved once."""

    request: GenerationRequest
    clean_prompt: str
    sampler: Any  # ResolvedSampler
    width: int
    height: int
    seed: int
    active: list[ActiveLora] = field(default_factory=list)
    notes: list[events.Log] = field(default_factory=list)  # warnings, sent after JobStarted


def adapter_name_for(stem: str, taken: set[str]) -> str:
    """A PEFT-safe adapter name (letters, digits, `_`, `-`; no dots) not in `taken`."""
    base = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "lora"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


class GenerationSession:
    """One base model, loaded once, with LoRAs switched and weighted in place."""

    def __init__(self, model_spec: str | Path | None = None, *, device: str | None = None,
                 torch_dtype: Any = None) -> None:
        self.model_spec = model_spec
        self.device = device
        self.torch_dtype = torch_dtype
        self._pipe = None
        self._scales: AdapterScales | None = None
        self._source = None
        self._base_scheduler_config: dict[str, Any] | None = None
        self._loras: dict[str, SessionLora] = {}
        self._lock = threading.RLock()  # held while the pipeline is used or changed
        self._version = _studio_version()

    # ------------------------------------------------------------------ model
    @property
    def pipeline(self):
        """The diffusers pipeline, loaded on first use and then kept."""
        with self._lock:
            if self._pipe is None:
                from lora_studio.core.models.loading import load_pipeline, resolve_model

                source = resolve_model(self.model_spec)
                pipe = load_pipeline(source, torch_dtype=self.torch_dtype, device=self.device)
                self._adopt(pipe, getattr(pipe, "model_source", source),
                            dict(pipe.scheduler.config))
            return self._pipe

    @classmethod
    def around(cls, pipe, source, scheduler_config: dict[str, Any]) -> GenerationSession:
        """A session over a pipeline built elsewhere: the trainer's previews render through
        the trainer's own networks with exactly the code `generate` runs. `source` is the
        model it was loaded from, `scheduler_config` the model's own scheduler settings."""
        session = cls(getattr(source, "path", None))
        session._adopt(pipe, source, dict(scheduler_config))
        return session

    def _adopt(self, pipe, source, scheduler_config: dict[str, Any]) -> None:
        pipe.set_progress_bar_config(disable=True)
        self._source = source
        self._base_scheduler_config = scheduler_config
        self._scales = AdapterScales(pipe)
        self._pipe = pipe

    @property
    def source(self):
        """The resolved model (`ModelSource`: kind, path, arch, prediction_type, name)."""
        _ = self.pipeline  # loads the model on first use, which resolves the source
        return self._source

    @property
    def model_name(self) -> str:
        src = self.source
        return str(getattr(src, "name", "") or Path(str(src.path)).stem)

    @property
    def model_hash(self) -> str | None:
        """A1111's "Model hash" (see `pnginfo.model_hash`)."""
        path = getattr(self.source, "path", None)
        return pnginfo.model_hash(path) if path else None

    def default_size(self) -> tuple[int, int]:
        pipe = self.pipeline
        size = pipe.unet.config.sample_size
        scale = getattr(pipe, "vae_scale_factor", 8)
        if isinstance(size, int):
            return size * scale, size * scale
        if isinstance(size, (list, tuple)) and len(size) == 2:
            return int(size[1]) * scale, int(size[0]) * scale
        side = _ARCH_SIZES.get(getattr(self.source, "arch", "sd1"), 512)
        return side, side

    # ------------------------------------------------------------------ LoRAs
    @property
    def loras(self) -> list[SessionLora]:
        """The loaded LoRAs in stack order (copies: change them through the session)."""
        return [replace(lora) for lora in self._loras.values()]

    @property
    def stack(self) -> list[StackEntry]:
        """The loaded LoRAs' stack records, in order."""
        return [lora.entry for lora in self._loras.values()]

    def set_stack(self, entries: Iterable[StackEntry], *, load: bool = True) -> StackReport:
        """Make the session's LoRAs exactly `entries` (see `generate.stack`): load the files not
        loaded, remove the LoRAs not listed, then apply every strength, on/off, block weights
        and start in one adapter pass (only what changed is re-scaled). A file that cannot be
        used is left out and reported; the others are applied.

        `load=False` (for the GUI thread) never reads a file and never waits for a render: the
        loaded LoRAs take their entries' values (applied at once when the pipeline is free,
        else when the running render ends); files not loaded are reported as `pending` and
        LoRAs not listed stay until the next `set_stack` that loads."""
        entries = unique_entries(entries)
        report = StackReport()
        if not load:
            # the worker replaces `_loras` (never changes it in place): a snapshot is safe here
            by_key = {lora.entry.key: lora for lora in tuple(self._loras.values())}
            for entry in entries:
                lora = by_key.get(entry.key)
                if lora is None:
                    report.pending.append(entry.key)
                else:
                    lora.entry = entry
                    report.adapters[entry.key] = lora.name
            self._apply_if_idle()
            return report
        with self._lock:
            self.pipeline  # noqa: B018 - loads the model on first use
            wanted = {entry.key for entry in entries}
            for lora in [lo for lo in self._loras.values() if lo.entry.key not in wanted]:
                self._unload(lora.name)
            by_key = {lora.entry.key: lora for lora in self._loras.values()}
            ordered: dict[str, SessionLora] = {}
            for entry in entries:
                lora = by_key.get(entry.key)
                if lora is None:
                    try:
                        lora = self._load(entry)
                    except StudioError as exc:
                        report.left_out(entry, exc)
                        continue
                    report.loaded[entry.key] = lora.report
                lora.entry = entry
                ordered[lora.name] = lora
                report.adapters[entry.key] = lora.name
            self._loras = ordered
            self._apply_adapters()
        return report

    def add_lora(self, path: str | Path, weight: float = 1.0, name: str | None = None,
                 block_weights: BlockWeights | None = None):
        """Load a LoRA file into the pipeline as a new adapter (after the loaded ones); returns
        its LoadReport.

        Raises LoraFormatError when the file is refused or none of its modules fit the model
        (nothing is left loaded then)."""
        entry = StackEntry(Path(path), weight, True, block_weights, name=name or "")
        with self._lock:
            lora = self._load(entry)
            self._loras = {**self._loras, lora.name: lora}
            self._apply_adapters()
        return lora.report

    def _load(self, entry: StackEntry) -> SessionLora:
        """Load `entry`'s file as a new adapter (not yet listed nor applied; lock held)."""
        from lora_studio.core.lora.apply import load_lora_into_pipeline

        path = entry.path
        if not path.is_file():
            raise LoraFormatError(f"LoRA file not found: {path}", "Check the path and try again.")
        pipe = self.pipeline
        adapter = adapter_name_for(entry.name, set(self._loras) | pipe_adapters(pipe))
        self._scales.reset()  # loading changes the LoRA layers and the active adapters
        report = load_lora_into_pipeline(pipe, path, adapter)
        adapter = getattr(report, "adapter_name", None) or adapter
        if report.matched == 0:
            delete_adapter(pipe, adapter)
            raise LoraFormatError(
                f"{path.name}: none of its {report.total} modules match this model.",
                "It was probably made for another base model (SD 1.x / SD 2.x / SDXL); "
                "pick a LoRA trained for this one.",
            )
        return SessionLora(adapter, entry, _short_hash(path), report, _alias(path))

    def remove_lora(self, name: str) -> None:
        with self._lock:
            self._get(name)
            self._unload(name)
            self._apply_adapters()

    def _unload(self, name: str) -> None:
        """Delete the adapter from the pipeline and the session (lock held; not applied)."""
        self._scales.reset()
        delete_adapter(self.pipeline, name)
        self._loras = {key: lora for key, lora in self._loras.items() if key != name}

    def set_weight(self, name: str, weight: float) -> None:
        self._change(name, weight=float(weight))

    def set_enabled(self, name: str, enabled: bool) -> None:
        self._change(name, enabled=bool(enabled))

    def set_block_weights(self, name: str, block_weights: BlockWeights | None) -> None:
        """Per-block factors on the LoRA's strength; None (or all ones): every block at it."""
        self._change(name, block_weights=block_weights)

    def set_start(self, name: str, start: float) -> None:
        """The share of the steps before the LoRA comes in: 0 (first step) up to below 1."""
        self._change(name, start=start)

    def _change(self, name: str, **changes: Any) -> None:
        """One LoRA's stack record changed (a StudioError when no LoRA has that name)."""
        lora = self._get(name)
        lora.entry = lora.entry.changed(**changes)
        if set(changes) != {"start"}:  # a start is read by the next render
            self._apply_if_idle()

    def _get(self, name: str) -> SessionLora:
        if name not in self._loras:
            known = ", ".join(self._loras) or "none"
            raise StudioError(f"No LoRA named {name!r} is loaded.", f"Loaded: {known}.")
        return self._loras[name]

    def _apply_if_idle(self) -> None:
        if self._pipe is not None and self._lock.acquire(blocking=False):
            try:
                self._apply_adapters()
            finally:
                self._lock.release()

    def _apply_adapters(self, active: list[ActiveAdapter] | None = None) -> None:
        """Make the pipeline's active adapters and scales match `active` (default: the
        session's enabled LoRAs at their weights and block weights). Call with the lock held."""
        if self._scales is None or not self._loras:
            return
        if active is None:
            active = [(lo.name, lo.weight, lo.block_weights)
                      for lo in self._loras.values() if lo.enabled]
        self._scales.apply(active)

    # ------------------------------------------------------------------ generation
    def generate(self, request: GenerationRequest, emit: events.Emit | None = None,
                 control: Any = None) -> list[GeneratedImage]:
        """Render `request.count` images; returns those finished (fewer when cancelled).

        Emits JobStarted, GenerationStep per denoising step (with a latent preview), an
        ImageGenerated per image, then Finished, or Cancelled when `control.cancelled` is set
        (checked after every step; the step in progress completes). Errors are raised (a
        StudioError for anything the user can fix); the job runner reports them as Failed."""
        emit = emit or (lambda event: None)
        with self._lock:
            pipe = self.pipeline
            render = self._prepare(request)
            pipe.scheduler = make_scheduler(self._base_scheduler_config, render.sampler.name,
                                            render.sampler.schedule_type)
            emit(events.JobStarted("generate", request.steps * request.count,
                                   f"seed {render.seed}"))
            for note in render.notes:
                emit(note)
            try:
                results = self._render_all(pipe, render, emit, control)
            finally:
                self._apply_adapters()
        outputs = [r.path for r in results if r.path is not None]
        if control is not None and control.cancelled and len(results) < request.count:
            emit(events.Cancelled(f"Cancelled after {len(results)} of {request.count} images.",
                                  outputs))
        else:
            emit(events.Finished(results, outputs, f"{len(results)} image(s), seed {render.seed}"))
        return results

    def _prepare(self, request: GenerationRequest) -> _Render:
        _validate(request)
        default_w, default_h = self.default_size()
        width, height = request.width or default_w, request.height or default_h
        for key, value in (("width", width), ("height", height)):
            if value % 8:
                raise ConfigError(f"generate.{key}", f"{value} is not a multiple of 8.",
                                  f"Use e.g. {max(8, value // 8 * 8)}.")
        sampler = resolve_sampler(request.sampler, request.schedule_type)
        clean, tags = pnginfo.parse_prompt_loras(request.prompt)
        seed = request.seed if request.seed is not None else secrets.randbelow(2**32 - 1)
        notes: list[events.Log] = []
        return _Render(request, clean, sampler, width, height, int(seed),
                       active_loras(list(self._loras.values()), tags, notes.append), notes)

    def _render_all(self, pipe, render: _Render, emit: events.Emit,
                    control: Any) -> list[GeneratedImage]:
        import torch

        from lora_studio.core.generate.decode import decode_latents

        request = render.request
        results: list[GeneratedImage] = []
        arch = getattr(self._source, "arch", "sd1")
        for index in range(request.count):
            if control is not None and control.cancelled:
                break
            seed = render.seed + index
            steps = request.steps
            self._apply_adapters(adapters_at(render.active, 0, steps))
            step_end = self._switching_adapters(render.active, steps,
                                                step_callback(emit, control, index, arch))
            output = pipe(
                prompt=render.clean_prompt,
                negative_prompt=request.negative or None,
                num_inference_steps=request.steps,
                guidance_scale=request.cfg,
                width=render.width,
                height=render.height,
                generator=torch.Generator("cpu").manual_seed(seed),
                callback_on_step_end=step_end,
                callback_on_step_end_tensor_inputs=["latents"],
                output_type="latent",
            )
            if control is not None and control.cancelled:
                break  # the interrupted image is unfinished: neither returned nor saved
            image = decode_latents(pipe, output.images)[0]
            results.append(self._finish_image(image, render, seed, index, emit))
        return results

    def _switching_adapters(self, active: list[ActiveLora], steps: int, step_end):
        """`step_end`, then the adapters of the next step applied where they change: LoRAs
        that start late switched on, scheduled weights moved (lock held)."""
        plan = [adapters_at(active, step, steps) for step in range(steps)]
        if all(adapters == plan[0] for adapters in plan):
            return step_end

        def on_step_end(pipe, step: int, timestep, kwargs: dict) -> dict:
            kwargs = step_end(pipe, step, timestep, kwargs)
            if step + 1 < steps and plan[step + 1] != plan[step]:
                self._apply_adapters(plan[step + 1])
            return kwargs

        return on_step_end

    def _finish_image(self, image, render: _Render, seed: int, index: int,
                      emit: events.Emit) -> GeneratedImage:
        request = render.request
        parameters = pnginfo.format_parameters(
            prompt=request.prompt, negative=request.negative, steps=request.steps,
            sampler=render.sampler.name, schedule_type=render.sampler.schedule_type,
            cfg=request.cfg, seed=seed, width=render.width, height=render.height,
            model_name=self.model_name, model_hash=self.model_hash,
            loras=[(a.tag_name, a.weight, a.lora.short_hash,
                    a.block_weights.notation() if a.block_weights else None)
                   for a in render.active],
            version=self._version,
            lora_starts=[(a.tag_name, a.lora.start) for a in render.active if not a.scheduled],
        )
        path = None
        if request.out_dir is not None:
            out_dir = Path(request.out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            path = pnginfo.save_png_with_parameters(image, pnginfo.next_image_path(out_dir, seed),
                                                    parameters)
        emit(events.ImageGenerated(path, image.copy(), seed, index, parameters))
        return GeneratedImage(image, seed, index, parameters, path)


# ---------------------------------------------------------------------- helpers
def _validate(request: GenerationRequest) -> None:
    if request.steps < 1:
        raise ConfigError("generate.steps", f"must be at least 1, not {request.steps}.")
    if request.count < 1:
        raise ConfigError("generate.count", f"must be at least 1, not {request.count}.")
    if request.cfg < 0:
        raise ConfigError("generate.cfg", f"must not be negative, not {request.cfg}.")
    if request.seed is not None and request.seed < 0:
        raise ConfigError("generate.seed", f"must not be negative, not {request.seed}.",
                          "Leave it empty for a random seed.")


def _short_hash(path: Path) -> str:
    from lora_studio.core.lora.hashing import short_hash

    try:
        return short_hash(path)
    except (StudioError, OSError, ValueError):
        return ""


def _alias(path: Path) -> str | None:
    """`ss_output_name` from the safetensors header (A1111's LoRA alias), read without tensors."""
    from lora_studio.core.lora.sft import read_header

    try:
        return read_header(path).metadata.get("ss_output_name") or None
    except (StudioError, OSError):  # not safetensors (a legacy file): no alias
        return None


def _studio_version() -> str:
    from lora_studio import __version__

    return f"lora-studio {__version__}"
