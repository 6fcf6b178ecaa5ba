"""`lora-studio serve` (issue 23): the A1111-compatible local API, spoken to over real HTTP
(urllib) on a free port, on the tiny SD 1.x model at 64 px and 2 steps.

One server (one base model) serves the whole module; each test uses its own LoRA names where it
counts loads, so the order of tests does not matter.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from lora_studio.core.errors import StudioError

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute")]

FAST = {"steps": 2, "width": 64, "height": 64, "cfg_scale": 5, "sampler_name": "Euler"}
PROMPT = "a red star on a blue background"


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir, tmp_path_factory):
    """Four kohya LoRAs (random, scaled apart) in a folder with a subfolder; `gamma` has the
    alias (ss_output_name) "fancy"."""
    from lora_studio.core.lora.formats import write_lora
    from lora_studio.core.lora.testing import make_random_lora

    folder = tmp_path_factory.mktemp("serve_loras")
    (folder / "sub").mkdir()
    base = make_random_lora(tiny_model_dir, rank=4, alpha=4.0, seed=3)
    for name, factor in (("alpha", 1.0), ("beta", -1.5), ("sub/gamma", 2.0), ("delta", 0.7)):
        lora = copy.deepcopy(base)
        for module in lora.modules.values():
            module.up.mul_(factor)
        if name.endswith("gamma"):
            lora.metadata["ss_output_name"] = "fancy"
        write_lora(lora, folder / f"{name}.safetensors", layout="kohya")
    return folder


def _start(api, **kw):
    from lora_studio.core.serve.server import ApiServer

    server = ApiServer(api, "127.0.0.1", 0, **kw)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def server(tiny_model_dir, lora_dir):
    from lora_studio.core.generate.session import GenerationSession
    from lora_studio.core.serve.api import ServeApi
    from lora_studio.core.serve.library import LoraLibrary

    srv = _start(ServeApi(GenerationSession(tiny_model_dir), LoraLibrary(lora_dir)))
    yield srv
    srv.shutdown()
    srv.server_close()


def call(server, path, body=None, *, raw: bytes | None = None, token: str | None = None,
         method: str | None = None):
    """(status, decoded JSON) of one request."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(server.url + path, data=data,
                                     method=method or ("POST" if data is not None else "GET"))
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def txt2img(server, prompt, **fields):
    status, answer = call(server, "/sdapi/v1/txt2img", {"prompt": prompt, **FAST, **fields})
    assert status == 200, answer
    return answer


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), np.int16)


def png_parameters(b64: str) -> str | None:
    return Image.open(io.BytesIO(base64.b64decode(b64))).text.get("parameters")


# ----------------------------------------------------------------------------- txt2img
def test_txt2img_renders_a1111s_answer_and_tags_switch_loras_per_request(server):
    plain = txt2img(server, PROMPT, seed=5)
    tagged = txt2img(server, f"{PROMPT}, <lora:alpha:0.8>", seed=5)
    again = txt2img(server, PROMPT, seed=5)

    assert set(plain) == {"images", "parameters", "info"} and len(plain["images"]) == 1
    # the same seed twice gives the same PNG, byte for byte, even with a LoRA used in between
    assert base64.b64decode(again["images"][0]) == base64.b64decode(plain["images"][0])
    assert np.abs(pixels(tagged["images"][0]) - pixels(plain["images"][0])).max() > 0
    info = json.loads(tagged["info"])
    text = png_parameters(tagged["images"][0])
    assert text is not None and text == info["infotexts"][0]
    assert text.startswith(f"{PROMPT}, <lora:alpha:0.8>\n") and "Lora hashes: \"alpha: " in text
    assert "Seed: 5, Size: 64x64" in text and "Sampler: Euler," in text
    assert (info["seed"], info["all_seeds"], info["width"], info["steps"]) == (5, [5], 64, 2)
    assert info["prompt"] == f"{PROMPT}, <lora:alpha:0.8>" and info["all_prompts"] == [
        info["prompt"]]
    assert tagged["parameters"]["prompt"] == info["prompt"]
    assert tagged["parameters"]["seed"] == 5 and tagged["parameters"]["steps"] == 2


def test_batch_random_seed_and_unknown_fields(server):
    answer = txt2img(server, PROMPT, seed=-1, batch_size=2, restore_faces=False,
                     override_settings={"sd_model_checkpoint": "whatever"}, styles=[])
    info = json.loads(answer["info"])
    seed = info["seed"]
    assert seed >= 0 and info["all_seeds"] == [seed, seed + 1]  # A1111: seed + index
    assert len(answer["images"]) == 2 and len(info["infotexts"]) == 2
    assert [png_parameters(b) for b in answer["images"]] == info["infotexts"]
    assert f"Seed: {seed + 1}," in info["infotexts"][1]
    assert answer["parameters"]["seed"] == -1  # the request, echoed as A1111 does
    assert answer["parameters"]["override_settings"] == {"sd_model_checkpoint": "whatever"}
    again = txt2img(server, PROMPT, seed=seed + 1)  # image 2 is re-made alone from its seed
    assert np.array_equal(pixels(again["images"][0]), pixels(answer["images"][1]))


def test_an_adapter_loads_once_and_a_swap_never_reloads_the_base(server, monkeypatch):
    import lora_studio.core.models.loading as loading

    session = server.api.session
    loads, base_loads = [], []
    real_load = session._load
    monkeypatch.setattr(session, "_load", lambda entry: (loads.append(entry.path.stem),
                                                         real_load(entry))[1])
    monkeypatch.setattr(loading, "load_pipeline",
                        lambda *a, **k: base_loads.append(a) or pytest.fail("base reloaded"))

    first = txt2img(server, f"{PROMPT} <lora:beta:1>", seed=7)
    second = txt2img(server, f"{PROMPT} <lora:beta:1>", seed=7)
    swapped = txt2img(server, f"{PROMPT} <lora:fancy:1>", seed=7)  # gamma by its alias
    back = txt2img(server, f"{PROMPT} <lora:beta:1>", seed=7)

    assert loads == ["beta", "gamma"]  # beta once for three requests; the swap loads gamma
    assert base_loads == []
    assert base64.b64decode(second["images"][0]) == base64.b64decode(first["images"][0])
    assert base64.b64decode(back["images"][0]) == base64.b64decode(first["images"][0])
    assert np.abs(pixels(swapped["images"][0]) - pixels(first["images"][0])).max() > 0
    assert "Lora hashes: \"fancy: " in json.loads(swapped["info"])["infotexts"][0]


def test_requests_wait_for_each_other(server, monkeypatch):
    session = server.api.session
    inside, most = [0], [0]
    lock = threading.Lock()
    real_generate = session.generate

    def counting_generate(*args, **kwargs):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            time.sleep(0.2)  # long enough for the other request to arrive
            return real_generate(*args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(session, "generate", counting_generate)
    answers = []
    threads = [threading.Thread(target=lambda s=s: answers.append(txt2img(server, PROMPT, seed=s)))
               for s in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(answers) == 2 and most[0] == 1  # one GPU job at a time


def test_interrupt_ends_the_job_with_the_images_finished_so_far(server):
    count = 24
    result = {}
    worker = threading.Thread(target=lambda: result.update(
        txt2img(server, PROMPT, seed=100, batch_size=count)))
    worker.start()
    deadline = time.monotonic() + 60
    while True:
        status, progress = call(server, "/sdapi/v1/progress")
        assert status == 200
        if progress["state"]["job_no"] >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    state = progress["state"]
    assert (state["job"], state["job_count"]) == ("scripts_txt2img", count)
    assert 0 < progress["progress"] < 1
    assert call(server, "/sdapi/v1/interrupt", {}) == (200, {})
    worker.join(120)

    images = result["images"]
    info = json.loads(result["info"])
    assert 1 <= len(images) < count
    assert info["infotexts"] == [png_parameters(b) for b in images]
    assert len(info["all_seeds"]) == count
    status, after = call(server, "/sdapi/v1/progress")
    assert after["state"]["interrupted"] is True and after["state"]["job_count"] == 0
    assert after["progress"] == 0
    # the next request is not interrupted
    assert len(txt2img(server, PROMPT, seed=1)["images"]) == 1


# ----------------------------------------------------------------------------- lists
def test_lists_loras_model_samplers(server, lora_dir, tiny_model_dir):
    status, loras = call(server, "/sdapi/v1/loras")
    assert status == 200
    by_name = {item["name"]: item for item in loras}
    assert set(by_name) == {"alpha", "beta", "gamma", "delta"}
    gamma = by_name["gamma"]
    assert gamma["alias"] == "fancy" and gamma["path"] == str(lora_dir / "sub" /
                                                                 "gamma.safetensors")
    assert gamma["metadata"]["ss_output_name"] == "fancy"
    assert by_name["alpha"]["alias"] == "alpha"

    status, models = call(server, "/sdapi/v1/sd-models")
    (model,) = models
    assert set(model) == {"title", "model_name", "hash", "sha256", "filename", "config"}
    assert model["sha256"].startswith(model["hash"]) and len(model["sha256"]) == 64
    assert model["filename"] == str(tiny_model_dir)
    assert model["title"] == f"{tiny_model_dir.name} [{model['hash']}]"

    status, samplers = call(server, "/sdapi/v1/samplers")
    names = {s["name"]: s for s in samplers}
    assert {"Euler a", "Euler", "DPM++ 2M", "DDIM", "UniPC"} <= set(names)
    assert "k_dpmpp_2m" in names["DPM++ 2M"]["aliases"]
    assert all(set(s) == {"name", "aliases", "options"} for s in samplers)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("path, body, status, words", [
    ("/sdapi/v1/txt2img", b"{not json", 400, "not valid JSON"),
    ("/sdapi/v1/txt2img", b"[1, 2]", 422, "JSON object"),
    ("/sdapi/v1/txt2img", {"prompt": "<lora:nosuch:1> cat"}, 404, "'nosuch'"),
    ("/sdapi/v1/txt2img", {"prompt": "cat", "sampler_name": "Euler z"}, 422, "Unknown sampler"),
    ("/sdapi/v1/txt2img", {"prompt": "cat", "width": 60}, 422, "multiple of 8"),
    ("/sdapi/v1/txt2img", {"prompt": "cat", "steps": "many"}, 422, "steps"),
    ("/sdapi/v1/txt2img", {"prompt": "cat", "steps": 0}, 422, "at least 1"),
    ("/sdapi/v1/txt2img", {"prompt": "cat", "seed": -7}, 422, "seed"),
    ("/sdapi/v1/txt2img", {"prompt": "cat", "scheduler": "Zigzag"}, 422, "schedule type"),
    ("/sdapi/v1/nothing", None, 404, "/sdapi/v1/nothing"),
    ("/sdapi/v1/loras", {}, 405, "POST"),
])
def test_bad_requests_get_a_4xx_json_error(server, path, body, status, words):
    raw = body if isinstance(body, bytes) else None
    got, answer = call(server, path, None if raw else body, raw=raw)
    assert got == status
    assert set(answer) == {"error", "detail"} and words in answer["detail"]
    assert "Traceback" not in answer["detail"]


def test_a_studio_error_is_422_and_a_bug_is_a_short_500(server, monkeypatch):
    session = server.api.session

    def refuse(*a, **k):
        raise StudioError("This LoRA was made for SDXL.", "Load it on an SDXL model.")

    monkeypatch.setattr(session, "generate", refuse)
    assert call(server, "/sdapi/v1/txt2img", {"prompt": "a", **FAST}) == (
        422, {"error": "Unprocessable Entity",
              "detail": "This LoRA was made for SDXL.\nLoad it on an SDXL model."})

    monkeypatch.setattr(session, "generate", lambda *a, **k: 1 / 0)
    status, answer = call(server, "/sdapi/v1/txt2img", {"prompt": "a", **FAST})
    assert status == 500 and answer["error"] == "Internal Server Error"
    assert "ZeroDivisionError" in answer["detail"] and "Traceback" not in answer["detail"]
    assert call(server, "/sdapi/v1/progress")[1]["state"]["job_count"] == 0  # job ended


# ----------------------------------------------------------------------------- access
def test_a_token_is_required_on_every_request(server):
    guarded = _start(server.api, token="s3cret")
    try:
        for token in (None, "wrong", "s3cret "[:-2]):
            status, answer = call(guarded, "/sdapi/v1/sd-models", token=token)
            assert status == 401 and answer["error"] == "Unauthorized"
        status, answer = call(guarded, "/sdapi/v1/txt2img", {"prompt": "a"}, token="nope")
        assert status == 401
        assert call(guarded, "/sdapi/v1/sd-models", token="s3cret")[0] == 200
    finally:
        guarded.shutdown()
        guarded.server_close()


def test_the_command_serves_until_stopped(tiny_model_dir, lora_dir, monkeypatch, capsys):
    """`lora-studio serve` through the CLI's main(), in this process (a second Python would
    spend most of the time budget importing diffusers); the server is stopped as Ctrl+C
    would stop serve_forever."""
    from types import SimpleNamespace

    from lora_studio.cli import main
    from lora_studio.core.serve.server import ApiServer

    started: list = []
    serve_forever = ApiServer.serve_forever
    monkeypatch.setattr(ApiServer, "serve_forever",
                        lambda self, *a: (started.append(self), serve_forever(self, *a))[1])
    codes: list = []
    runner = threading.Thread(target=lambda: codes.append(main(
        ["serve", "--model", str(tiny_model_dir), "--lora-dir", str(lora_dir), "--port", "0",
         "--quiet", "--device", "cpu", "--max-loaded", "1"])))
    runner.start()
    deadline = time.monotonic() + 60
    while not started and runner.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started, capsys.readouterr().err
    served = started[0]
    try:
        assert f" on {served.url} " in capsys.readouterr().out
        remote = SimpleNamespace(url=served.url)
        answer = txt2img(remote, f"{PROMPT} <lora:delta:0.5>", seed=3)
        assert "Lora hashes: \"delta: " in png_parameters(answer["images"][0])
        assert served.api.pool.max_loaded == 1
    finally:
        served.shutdown()
        runner.join(30)
    assert codes == [0]


def test_other_hosts_need_a_token(server, tiny_model_dir, capsys):
    from lora_studio.cli import main
    from lora_studio.core.serve.server import ApiServer

    code = main(["serve", "--host", "0.0.0.0", "--model", str(tiny_model_dir), "--port", "0"])
    assert code == 2
    assert "--token" in capsys.readouterr().err
    with pytest.raises(StudioError, match="--token"):
        ApiServer(server.api, "192.168.1.7", 0)


# ----------------------------------------------------------------------------- the pool
class _FakeSession:
    """The few session methods the pool uses, recording loads and unloads."""

    def __init__(self):
        self.added, self.removed, self._loras = [], [], []

    def set_stack(self, entries):
        from types import SimpleNamespace

        from lora_studio.core.generate.stack import StackReport

        report, wanted = StackReport(), {e.path.stem: e for e in entries}
        self.removed += [lo.name for lo in self._loras if lo.name not in wanted]
        held = {lo.name: lo for lo in self._loras}
        self._loras = []
        for name, entry in wanted.items():
            if name not in held:
                self.added.append(name)
                report.loaded[entry.key] = "report"
            self._loras.append(SimpleNamespace(name=name, prompt_name=name, alias=None,
                                               enabled=entry.enabled))
            report.adapters[entry.key] = name
        return report

    @property
    def loras(self):
        return list(self._loras)


def test_the_pool_keeps_the_most_recently_used_loras(tmp_path):
    import os

    from lora_studio.core.serve.library import AdapterPool

    files = {}
    for name in "abcd":
        files[name] = tmp_path / f"{name}.safetensors"
        files[name].write_bytes(b"x")
    pool, session = AdapterPool(max_loaded=2), _FakeSession()
    for names in ("a", "b", "a", "c", "a", "d"):
        pool.ensure(session, {n: files[n] for n in names})
    assert session.added == ["a", "b", "c", "d"] and session.removed == ["b", "c"]
    assert [p.stem for p in pool.loaded] == ["a", "d"]
    assert not any(lo.enabled for lo in session.loras)  # on only through a request's tags
    assert pool.ensure(session, {"x": files["a"], "y": files["b"], "z": files["c"]}) == \
        ["a", "b", "c"]  # one request may need more than the bound
    stat = files["a"].stat()
    os.utime(files["a"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    pool.ensure(session, {"a": files["a"]})  # changed on disk: loaded again
    assert session.added[-1] == "a" and pool.loads == 7
