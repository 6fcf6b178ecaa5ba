"""`lora-studio dataset check`, run as a person would: in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def run_check(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "lora_studio", "dataset", "check",
                           *map(str, args)], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=60)


def test_json_report_of_a_mixed_folder(tmp_path):
    Image.new("RGB", (160, 128), (10, 20, 30)).save(tmp_path / "a.png")
    (tmp_path / "a.caption").write_text("sks cat", encoding="utf-8")
    Image.new("RGB", (128, 128)).save(tmp_path / "b.JPG")
    Image.new("RGB", (100, 100)).save(tmp_path / "small.png")
    (tmp_path / "empty.png").write_bytes(b"")

    result = run_check(tmp_path, "--json", "--caption-extension", ".caption",
                       "--resolution", "128")

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["usable"] == 3
    assert data["captions_found"] == 1 and data["captions_missing"] == 2
    skipped = {Path(s["path"]).name: s["reason"] for s in data["skipped"]}
    assert set(skipped) == {"empty.png"}
    captions = {Path(i["image"]).name: i["caption"] for i in data["items"]}
    assert captions == {"a.png": "sks cat", "b.JPG": "", "small.png": ""}
    # The size rule is training's: smaller than its bucket is used, upscaled, and said so.
    training = data["training"]
    assert [(Path(u["image"]).name, u["bucket"]) for u in training["upscaled"]] == [
        ("small.png", [128, 128])]
    assert training["buckets"] == [{"resolution": [128, 128], "count": 3, "per_epoch": 3}]
    assert training["steps_per_epoch"] == 3 and training["total_steps"] == 1000


def test_all_bad_folder_fails_with_a_helpful_text_report(tmp_path):
    (tmp_path / "photo.jpg").write_text("oops, a text file", encoding="utf-8")
    (tmp_path / "zero.png").write_bytes(b"")

    result = run_check(tmp_path)

    assert result.returncode == 2
    out = result.stdout
    assert "0 images usable" in out
    assert "photo.jpg: not an image" in out
    assert "zero.png: empty file (0 bytes)" in out
    assert out.strip().splitlines()[-1].startswith("Nothing usable: every image was skipped")


def test_empty_folder_fails_and_says_what_to_add(tmp_path):
    result = run_check(tmp_path)

    assert result.returncode == 2
    last = result.stdout.strip().splitlines()[-1]
    assert "no images found" in last and "PNG" in last


def test_missing_folder_is_an_error_message_not_a_traceback(tmp_path):
    result = run_check(tmp_path / "nowhere")

    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    """`lora-studio dataset check DIR | head`: the reader went away before the report was
    written; the command ends with 141 (as SIGPIPE would) and says nothing, no traceback."""
    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (i * 60, 90, 120)).save(folder / f"img_{i}.png")
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE
    try:
        done = subprocess.run([sys.executable, "-m", "lora_studio", "dataset", "check",
                               str(folder)], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=300,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    finally:
        os.close(write_end)
    assert done.returncode in (0, 141)
    assert done.stderr == ""
