"""Every bad LoRA file and base model of the corpus (tests/bad_input_files.py) through every CLI
command that takes one: refused with exit code 2 and a short message that names the file, says
what is wrong and what to do (no traceback), nothing written over the output, and no pickle
payload ever run."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from bad_input_files import (
    BAD_LORAS,
    BAD_MODELS,
    LORAS,
    LYCORIS_LORAS,
    MODELS,
    PLAIN_LORA_COMMANDS,
    BadFile,
    corpus,
    good_sd1_tensors,
    write_committed_loras,
    write_committed_models,
    write_test_time_files,
)

from lora_studio.cli import main as cli_main

LORA_COMMANDS = ("inspect", "generate", "merge", "fuse", "convert", "resize")
MODEL_COMMANDS = ("generate", "fuse")  # the commands that load a base model
# what must never reach a person: a traceback, or a raw parser / Python error instead of a message
LEAKS = ("Traceback", "unexpected", "SafetensorError", "UnpicklingError", "KeyError",
         "JSONDecodeError", "struct.error", "RuntimeError", "TypeError", "ValueError",
         "Error while deserializing")
EARLIER = b"an earlier export, which a refused command must leave alone"


@pytest.fixture(scope="module")
def bad(tmp_path_factory, tiny_model_dir):
    """The corpus in a temp folder, a good LoRA beside it, and the tiny models (the SDXL one
    built on first use)."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("bad_inputs")
    sentinel = root / "SENTINEL"
    loras, models = corpus(root, sentinel)
    good = root / "good.safetensors"
    save_file(good_sd1_tensors(), str(good))
    built: dict[str, Path] = {"sd1": tiny_model_dir}

    def model(base: str) -> Path:
        if base not in built:
            from lora_studio.core.models.tiny_sdxl import make_tiny_sdxl_model

            built[base] = make_tiny_sdxl_model(root / "tiny-sdxl", seed=5)
        return built[base]

    yield SimpleNamespace(loras=loras, models=models, sentinel=sentinel, good=good, model=model)
    (loras / "huge_header.safetensors").unlink(missing_ok=True)  # 100 MB


@pytest.fixture
def out_dir(tmp_path) -> Path:
    """The output folder of one command, holding an earlier export it must not touch."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "earlier.safetensors").write_bytes(EARLIER)
    return folder


def lora_argv(command: str, lora: Path, bad, base: str, out_dir: Path) -> list[str]:
    out = str(out_dir / "earlier.safetensors")  # the output is an existing file
    model = str(bad.model(base)) if command in MODEL_COMMANDS else ""
    return {
        "inspect": ["inspect", str(lora)],
        "generate": ["generate", "--model", model, "--lora", str(lora), "--prompt", "x",
                     "--steps", "1", "--width", "64", "--height", "64", "--out", str(out_dir)],
        "merge": ["merge", str(bad.good), f"{lora}:0.5", "--out", out],
        "fuse": ["fuse", "--model", model, "--lora", str(lora), "--out", out],
        "convert": ["convert", str(lora), "--format", "diffusers", "--out", out],
        "resize": ["resize", str(lora), "--rank", "2", "--out", out],
    }[command]


def model_argv(command: str, model: Path, bad, out_dir: Path) -> list[str]:
    return {
        "generate": ["generate", "--model", str(model), "--prompt", "x", "--steps", "1",
                     "--width", "64", "--height", "64", "--out", str(out_dir)],
        "fuse": ["fuse", "--model", str(model), "--lora", str(bad.good),
                 "--out", str(out_dir / "earlier.safetensors")],
    }[command]


def assert_refused(entry: BadFile, err: str) -> None:
    """The message a person sees: "error: what" then a line saying what to do."""
    assert err.startswith("error: "), err
    assert entry.name in err, err  # which file (of several given) is the problem
    for fragment in entry.says:
        assert fragment in err, err
    assert len(err.strip().splitlines()) >= 2, f"no fix given: {err}"
    assert not any(leak in err for leak in LEAKS), err


def assert_untouched(out_dir: Path) -> None:
    assert [p.name for p in out_dir.iterdir()] == ["earlier.safetensors"]  # no image, no temp
    assert (out_dir / "earlier.safetensors").read_bytes() == EARLIER


def _lora_cases():
    for entry in BAD_LORAS:
        # a good LoRA made for another model is refused only where there is a model
        for command in MODEL_COMMANDS if entry.base else LORA_COMMANDS:
            yield pytest.param(entry, command, id=f"{entry.id}-{command}")


@pytest.mark.parametrize("entry, command", list(_lora_cases()))
def test_bad_lora_is_refused_by_every_command(entry, command, bad, out_dir, capsys):
    argv = lora_argv(command, bad.loras / entry.name, bad, entry.base or "sd1", out_dir)
    assert cli_main(argv) == 2
    assert_refused(entry, capsys.readouterr().err)
    assert_untouched(out_dir)
    assert not bad.sentinel.exists()


@pytest.mark.parametrize("entry, command", [pytest.param(e, c, id=f"{e.id}-{c}")
                                            for e in BAD_MODELS for c in MODEL_COMMANDS])
def test_bad_base_model_is_refused_by_every_command(entry, command, bad, out_dir, capsys,
                                                   caplog):
    with caplog.at_level(logging.WARNING, logger="lora_studio"):
        assert cli_main(model_argv(command, bad.models / entry.name, bad, out_dir)) == 2
    assert_refused(entry, capsys.readouterr().err)
    # a refused pickle gets the refusal alone, not also the warning of a pickle that loaded
    assert not [r.getMessage() for r in caplog.records if "pickle" in r.getMessage()]
    assert_untouched(out_dir)
    assert not bad.sentinel.exists()


def test_the_files_made_for_a_model_are_good_files(bad, capsys):
    """The entries refused only on a model are readable LoRAs: the refusal above is about the
    model they meet, not a damaged file."""
    for entry in BAD_LORAS:
        if entry.base:
            assert cli_main(["inspect", str(bad.loras / entry.name)]) == 0, entry.name
    assert "SDXL" in capsys.readouterr().out


@pytest.mark.parametrize("entry, command", [
    pytest.param(e, c, id=f"{e.id}-{c}") for e in LYCORIS_LORAS for c in PLAIN_LORA_COMMANDS])
def test_lycoris_file_is_refused_by_the_plain_lora_commands(entry, command, bad, out_dir,
                                                            capsys):
    argv = lora_argv(command, bad.loras / entry.name, bad, "sd1", out_dir)
    assert cli_main(argv) == 2
    assert_refused(entry, capsys.readouterr().err)
    assert_untouched(out_dir)


@pytest.mark.parametrize("entry", LYCORIS_LORAS, ids=lambda e: e.id)
def test_lycoris_file_is_inspected_and_generated_with(entry, bad, out_dir, capsys):
    """The LyCORIS entries that left the bad list: good files for inspect and generate."""
    lora = bad.loras / entry.name
    assert cli_main(lora_argv("inspect", lora, bad, "sd1", out_dir)) == 0
    assert "kind:       " + entry.says[0].removeprefix("is a LyCORIS ").removesuffix(" file") \
        in capsys.readouterr().out
    assert cli_main(lora_argv("generate", lora, bad, "sd1", out_dir)) == 0
    assert f"{entry.name}: 1/1 modules matched" in capsys.readouterr().out
    assert len(list(out_dir.glob("*.png"))) == 1


@pytest.mark.parametrize("entry", LYCORIS_LORAS, ids=lambda e: e.id)
def test_lycoris_file_is_merged_fused_and_resized(entry, bad, out_dir, capsys):
    """The LyCORIS entries through the commands that took plain LoRAs only: merge wants a rank
    (exit 2 naming the file without one), then merges; resize makes a plain LoRA of it; fuse
    bakes it in, except a bias update (diff_b) for a layer without a bias (exit 2, said so)."""
    lora = bad.loras / entry.name
    assert cli_main(lora_argv("merge", lora, bad, "sd1", out_dir)) == 2
    err = capsys.readouterr().err
    assert f"error: {entry.name} {entry.says[0]}" in err and "--rank" in err, err
    assert_untouched(out_dir)
    written = out_dir.parent / "written"
    for argv in (["merge", str(bad.good), f"{lora}:0.5", "--rank", "4", "--out",
                  str(written / "merged.safetensors")],
                 ["resize", str(lora), "--rank", "2", "--out", str(written / "resized.safetensors")]):
        assert cli_main(argv) == 0, capsys.readouterr().err
    assert len(list(written.glob("*.safetensors"))) == 2
    fuse = ["fuse", "--model", str(bad.model("sd1")), "--lora", f"{lora}:0.5", "--out",
            str(written / "fused")]
    if entry.name == "full_diff.safetensors":  # its diff_b is on to_q, which has no bias
        assert cli_main(fuse) == 2
        assert "adds to a bias (diff_b), and that layer of this model has none" in \
            capsys.readouterr().err
    else:
        assert cli_main(fuse) == 0, capsys.readouterr().err
        assert (written / "fused" / "model_index.json").is_file()


def test_fuse_refuses_a_bad_lora_before_loading_the_model(bad, out_dir, capsys, monkeypatch):
    """A damaged LoRA is refused at once, not after minutes of loading an SDXL checkpoint."""
    from lora_studio.core.models import loading

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the LoRAs were read")

    monkeypatch.setattr(loading, "load_pipeline", no_model)
    truncated = bad.loras / "truncated.safetensors"
    assert cli_main(["fuse", "--model", str(bad.model("sd1")), "--lora", str(bad.good),
                     "--lora", f"{truncated}:0.5", "--out", str(out_dir / "x.safetensors")]) == 2
    assert "truncated.safetensors is truncated" in capsys.readouterr().err
    assert_untouched(out_dir)


# ----------------------------------------------------------------------------- real processes
def _console_script() -> list[str]:
    script = Path(sys.executable).with_name("lora-studio")
    assert script.is_file(), "the lora-studio console script is not installed in this venv"
    return [str(script)]


def test_the_installed_commands_exit_2_without_a_traceback(bad, tmp_path):
    """The real `lora-studio` console script and `python -m lora_studio`, each in its own
    process (started together: most of their time is importing torch)."""
    outs = {name: tmp_path / name for name in ("inspect", "generate", "merge")}
    for folder in outs.values():
        folder.mkdir()
        (folder / "earlier.safetensors").write_bytes(EARLIER)
    module = [sys.executable, "-m", "lora_studio"]
    runs = {
        "inspect": _console_script() + ["inspect", bad.loras / "payload.pt"],
        "generate": module + ["generate", "--model", bad.models / "payload.ckpt", "--prompt",
                              "x", "--out", outs["generate"]],
        "merge": _console_script() + ["merge", bad.good, bad.loras / "nan_weights.safetensors",
                                      "--out", outs["merge"] / "earlier.safetensors"],
    }
    started = {name: subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
               for name, argv in runs.items()}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 2, (name, stderr)
        assert stderr.startswith("error: ") and "Traceback" not in stderr, (name, stderr)
        assert stdout == "", (name, stdout)
        assert_untouched(outs[name])
    assert not bad.sentinel.exists()


# ----------------------------------------------------------------------------- the corpus
def test_the_payloads_are_live_outside_the_studio(tmp_path):
    """The pickles really run code when unpickled, so 'the sentinel never appears' means
    something."""
    import torch

    sentinel = tmp_path / "RAN"
    write_test_time_files(tmp_path / "l", tmp_path / "m", sentinel, huge=False)
    payloads = [(tmp_path / "l", e.name) for e in BAD_LORAS if e.payload]
    payloads += [(tmp_path / "m", e.name) for e in BAD_MODELS if e.payload]
    assert len(payloads) == 5
    for folder, name in payloads:
        path = folder / name
        if path.read_bytes()[:2] == b"PK":
            torch.load(str(path), weights_only=False)
        else:
            pickle.loads(path.read_bytes())
        assert sentinel.exists(), name
        sentinel.unlink()


def test_the_committed_corpus_is_small_and_matches_the_table(tmp_path):
    """Every committed entry is there and nothing else; payloads and the 100 MB file are never
    committed; the writer makes the same set of files."""
    for folder, entries in ((LORAS, BAD_LORAS + LYCORIS_LORAS), (MODELS, BAD_MODELS)):
        names = {p.name for p in folder.iterdir()}
        assert names == {e.name for e in entries if not e.test_time}
    files = [p for p in (*LORAS.rglob("*"), *MODELS.rglob("*")) if p.is_file()]
    assert all(p.stat().st_size <= 8192 for p in files), [p.name for p in files]
    assert sum(p.stat().st_size for p in files) < 300_000
    written = write_committed_loras(tmp_path / "l") + write_committed_models(tmp_path / "m")
    assert {p.name for p in written} == {e.name for e in BAD_LORAS + LYCORIS_LORAS + BAD_MODELS
                                         if not e.test_time}
