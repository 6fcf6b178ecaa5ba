"""`--lora FILE[:WEIGHT]` parsing, Windows paths included."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_studio.core.generate.cli_run import parse_lora_arg


@pytest.mark.parametrize("arg, path, weight", [
    ("style.safetensors", "style.safetensors", 1.0),
    ("style.safetensors:0.8", "style.safetensors", 0.8),
    ("loras/style.safetensors:-0.5", "loras/style.safetensors", -0.5),
    ("style.safetensors:1e-1", "style.safetensors", 0.1),
    (r"C:\x\y.safetensors:0.8", r"C:\x\y.safetensors", 0.8),
    (r"C:\x\y.safetensors", r"C:\x\y.safetensors", 1.0),
    ("C:/x/y.safetensors:1", "C:/x/y.safetensors", 1.0),
    ("odd:name.safetensors", "odd:name.safetensors", 1.0),
    ("style.safetensors:nan", "style.safetensors:nan", 1.0),  # not a weight
])
def test_parse_lora_arg(arg, path, weight):
    assert parse_lora_arg(arg) == (Path(path), weight)


def test_an_existing_file_whose_name_ends_in_a_number_wins(tmp_path):
    odd = tmp_path / "style:2"
    odd.write_bytes(b"")
    assert parse_lora_arg(str(odd)) == (odd, 1.0)
    assert parse_lora_arg(f"{odd}:0.5") == (odd, 0.5)
