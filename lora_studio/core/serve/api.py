"""A1111's API (a subset) over one `GenerationSession`, without HTTP: dicts in, dicts out.

Field names and shapes follow AUTOMATIC1111's `modules/api/api.py` and `models.py`:
- txt2img takes prompt (with `<lora:name:w>` tags, resolved in the served LoRA folder by file
  stem or `ss_output_name`), negative_prompt, steps (default 50), cfg_scale (7), seed (-1 =
  random), width / height (default: the model's native size, where A1111 says 512),
  sampler_name (or the older sampler_index; default "Euler", A1111's API default), scheduler
  (A1111 ≥ 1.9's schedule type), batch_size and n_iter (batch_size × n_iter images, seeds
  seed, seed + 1, ...), send_images. Other fields are accepted and ignored, as A1111's model
  ignores what it does not know. It answers `{"images": [base64 PNG], "parameters": {the
  request}, "info": "<JSON of A1111's Processed.js()>"}`; each PNG carries the `parameters`
  text chunk, which is also `infotexts[i]` in info.
- An interrupted job answers like a finished one, with the images finished before the interrupt
  (A1111 also returns the interrupted batch's half-denoised images; the session does not keep
  an unfinished image).
- Errors are `ApiError(status, detail)`: the server sends `{"error": reason, "detail": ...}`. A
  `StudioError` from the session becomes a 422 with its message.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_studio.core.errors import StudioError
from lora_studio.core.serve.library import AdapterPool, LoraLibrary
from lora_studio.core.serve.progress import JobProgress, png_base64

A1111_STEPS, A1111_CFG, A1111_SAMPLER = 50, 7.0, "Euler"


class ApiError(Exception):
    """A request the API refuses: HTTP `status` and a `detail` saying what to change."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


# ----------------------------------------------------------------------------- reading fields
def _value(body: dict, key: str, default: Any) -> Any:
    value = body.get(key)
    return default if value is None else value


def _int(body: dict, key: str, default: int | None) -> int | None:
    value = _value(body, key, default)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    try:
        number = float(value) if isinstance(value, (float, str)) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number != int(number):
        raise ApiError(422, f"{key}: {value!r} is not a whole number.")
    return int(number)


def _float(body: dict, key: str, default: float) -> float:
    value = _value(body, key, default)
    try:
        number = float(value) if isinstance(value, (int, float, str)) \
            and not isinstance(value, bool) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ApiError(422, f"{key}: {value!r} is not a number.")
    return number


def _str(body: dict, key: str, default: str | None) -> str | None:
    value = _value(body, key, default)
    if value is not None and not isinstance(value, str):
        raise ApiError(422, f"{key}: must be a string, not {type(value).__name__}.")
    return value


def _at_least(key: str, value: int, least: int) -> int:
    if value < least:
        raise ApiError(422, f"{key}: must be at least {least}, not {value}.")
    return value


# ----------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class ServedModel:
    """What the API says about the base model, read once at start-up (never while a render
    holds the session)."""

    name: str
    path: Path
    short_hash: str | None
    width: int
    height: int
    version: str

    @classmethod
    def of(cls, session) -> ServedModel:
        from lora_studio import __version__

        _ = session.pipeline  # loads the base model, once
        width, height = session.default_size()
        return cls(session.model_name, Path(session.source.path), session.model_hash,
                   width, height, __version__)

    def sd_model(self, sha256: str | None) -> dict[str, Any]:
        """A1111's `/sdapi/v1/sd-models` item."""
        title = self.path.name + (f" [{self.short_hash}]" if self.short_hash else "")
        return {"title": title, "model_name": self.name, "hash": self.short_hash,
                "sha256": sha256, "filename": str(self.path), "config": None}


# ----------------------------------------------------------------------------- txt2img
@dataclass
class Txt2Img:
    """One txt2img request, read and checked before it waits for the GPU."""

    request: Any  # generate.session.GenerationRequest
    parameters: dict[str, Any]  # the request echoed back, A1111's defaults filled in
    loras: dict[str, Path]  # tag name -> file
    batch_size: int
    send_images: bool
    sampler: str  # canonical A1111 sampler name


def parse_txt2img(body: Any, library: LoraLibrary, model: ServedModel) -> Txt2Img:
    """Read a txt2img body (see the module docstring); ApiError for what cannot be used."""
    from lora_studio.core.generate.pnginfo import parse_prompt_loras
    from lora_studio.core.generate.samplers import resolve_sampler
    from lora_studio.core.generate.session import GenerationRequest

    if not isinstance(body, dict):
        raise ApiError(422, "The request body must be a JSON object.")
    prompt, negative = _str(body, "prompt", ""), _str(body, "negative_prompt", "")
    steps = _at_least("steps", _int(body, "steps", A1111_STEPS), 1)
    cfg = _float(body, "cfg_scale", A1111_CFG)
    seed = _int(body, "seed", -1)
    size = {key: _int(body, key, default) for key, default in
            (("width", model.width), ("height", model.height))}
    for key, value in size.items():
        if value < 8 or value % 8:
            raise ApiError(422, f"{key}: {value} is not a positive multiple of 8; use e.g. "
                           f"{max(8, value // 8 * 8)}.")
    batch_size = _at_least("batch_size", _int(body, "batch_size", 1), 1)
    n_iter = _at_least("n_iter", _int(body, "n_iter", 1), 1)
    sampler_name = _str(body, "sampler_name", None) or _str(body, "sampler_index", None) \
        or A1111_SAMPLER
    sampler = resolve_sampler(sampler_name, _str(body, "scheduler", None))
    if seed is None or seed == -1:
        seed = secrets.randbelow(2**32 - 1)
    elif not 0 <= seed < 2**63:
        raise ApiError(422, f"seed: {seed} is out of range; use 0 up to 2**63 - 1, or -1 for "
                       "a random seed.")
    _, tags = parse_prompt_loras(prompt)
    loras = {tag.name: _lora_file(library, tag.name) for tag in tags}
    parameters = {"prompt": prompt, "negative_prompt": negative, "steps": steps,
                  "cfg_scale": cfg, "seed": _value(body, "seed", -1), **size,
                  "sampler_name": sampler_name, "scheduler": body.get("scheduler"),
                  "batch_size": batch_size, "n_iter": n_iter,
                  "send_images": bool(_value(body, "send_images", True)), "save_images": False}
    parameters.update({k: v for k, v in body.items() if k not in parameters})
    request = GenerationRequest(prompt, negative, steps, cfg, seed, size["width"],
                                size["height"], sampler.name, sampler.schedule_type,
                                count=batch_size * n_iter)
    return Txt2Img(request, parameters, loras, batch_size, parameters["send_images"],
                   sampler.name)


def _lora_file(library: LoraLibrary, name: str) -> Path:
    entry = library.find(name)
    if entry is None:
        raise ApiError(404, f"<lora:{name}>: no LoRA named {name!r} in {library.folder} (by "
                       "file name or ss_output_name); GET /sdapi/v1/loras lists them.")
    return entry.path


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _info(call: Txt2Img, results: list, model: ServedModel, timestamp: str) -> str:
    """A1111's `Processed.js()`: the generation info as a JSON string."""
    from lora_studio.core.generate.pnginfo import parse_parameters

    req = call.request
    count = req.count
    infotexts = [r.parameters for r in results]
    parsed = parse_parameters(infotexts[0]) if infotexts else {"loras": [], "extra": {}}
    hashes = ", ".join(f"{lo['name']}: {lo['hash']}" for lo in parsed["loras"] if lo["hash"])
    extra = dict(parsed["extra"])
    if hashes:
        extra["Lora hashes"] = hashes
    obj = {
        "prompt": req.prompt, "all_prompts": [req.prompt] * count,
        "negative_prompt": req.negative, "all_negative_prompts": [req.negative] * count,
        "seed": req.seed, "all_seeds": [req.seed + i for i in range(count)],
        "subseed": -1, "all_subseeds": [-1] * count, "subseed_strength": 0,
        "width": req.width, "height": req.height, "sampler_name": call.sampler,
        "cfg_scale": req.cfg, "steps": req.steps, "batch_size": call.batch_size,
        "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": model.name, "sd_model_hash": model.short_hash,
        "sd_vae_name": None, "sd_vae_hash": None,
        "seed_resize_from_w": -1, "seed_resize_from_h": -1, "denoising_strength": None,
        "extra_generation_params": extra, "index_of_first_image": 0,
        "infotexts": infotexts, "styles": [], "job_timestamp": timestamp, "clip_skip": 1,
        "is_using_inpainting_conditioning": False, "version": model.version,
    }
    return json.dumps(obj)


# ----------------------------------------------------------------------------- the API
class ServeApi:
    """The endpoints' logic; one GPU job at a time (`txt2img` waits for the queue lock),
    progress and interrupt answer at once."""

    def __init__(self, session, library: LoraLibrary, pool: AdapterPool | None = None) -> None:
        self.session = session
        self.library = library
        self.pool = pool or AdapterPool()
        self.model = ServedModel.of(session)
        self.progress = JobProgress()
        self._queue = threading.Lock()
        self._sha256: str | None = None

    def txt2img(self, body: Any) -> dict[str, Any]:
        from lora_studio.core.jobs import JobControl

        call = parse_txt2img(body, self.library, self.model)
        with self._queue:
            control = JobControl()
            self.progress.begin(control, call.request.count, call.request.steps)
            timestamp = self.progress.job_timestamp
            try:
                self.pool.ensure(self.session, call.loras)
                results = self.session.generate(call.request, emit=self.progress.on_event,
                                                control=control)
            except StudioError as exc:
                raise ApiError(422, exc.user_message()) from exc
            finally:
                self.progress.end()
        images = [png_base64(r.image, r.parameters) for r in results] if call.send_images else []
        return {"images": images, "parameters": call.parameters,
                "info": _info(call, results, self.model, timestamp)}

    def loras(self) -> list[dict[str, Any]]:
        return [entry.to_json() for entry in self.library.entries()]

    def refresh_loras(self) -> None:
        self.library.entries()  # the folder is read on every request anyway

    def sd_models(self) -> list[dict[str, Any]]:
        if self._sha256 is None:
            from lora_studio.core.generate.pnginfo import model_weights_file

            weights = model_weights_file(self.model.path)
            self._sha256 = _sha256(weights) if weights else ""
        return [self.model.sd_model(self._sha256 or None)]

    def samplers(self) -> list[dict[str, Any]]:
        from lora_studio.core.generate.samplers import SAMPLERS

        return [{"name": s.name, "aliases": list(s.aliases),
                 "options": {"scheduler_class": s.scheduler_class, **s.options}}
                for s in SAMPLERS]

    def schedulers(self) -> list[dict[str, Any]]:
        from lora_studio.core.generate.samplers import SCHEDULE_TYPES

        return [{"name": name.lower().replace(" ", "_"), "label": name, "aliases": None,
                 "default_rho": None, "need_inner_model": None} for name in SCHEDULE_TYPES]

    def options(self) -> dict[str, Any]:
        return {"sd_model_checkpoint": self.model.sd_model(None)["title"]}

    def progress_report(self, skip_current_image: bool = False) -> dict[str, Any]:
        return self.progress.report(skip_current_image)

    def interrupt(self) -> dict[str, Any]:
        self.progress.interrupt()
        return {}
