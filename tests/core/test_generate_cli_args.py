"""`--lora FILE[:WEIGHT][:lbw=BLOCKS]` parsing, Windows paths included."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_studio.core.errors import StudioError
from lora_studio.core.generate.cli_run import parse_lora_arg
from lora_studio.core.lora.block_weights import BlockWeights


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
    assert parse_lora_arg(arg) == (Path(path), weight, None)


def test_an_existing_file_whose_name_ends_in_a_number_wins(tmp_path):
    odd = tmp_path / "style:2"
    odd.write_bytes(b"")
    assert parse_lora_arg(str(odd)) == (odd, 1.0, None)
    assert parse_lora_arg(f"{odd}:0.5") == (odd, 0.5, None)


@pytest.mark.parametrize("arg, path, weight, blocks", [
    ("style.safetensors:0.8:lbw=OUTALL", "style.safetensors", 0.8, "OUTALL"),
    ("style.safetensors:lbw=outs", "style.safetensors", 1.0, "OUTS"),
    (r"C:\x\y.safetensors:0.5:LBW=0,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1", r"C:\x\y.safetensors",
     0.5, "NO_TE"),
])
def test_parse_lora_arg_with_block_weights(arg, path, weight, blocks):
    assert parse_lora_arg(arg) == (Path(path), weight, BlockWeights.parse(blocks))


def test_bad_block_weights_on_the_command_line_say_what_to_write():
    with pytest.raises(StudioError, match="got 2") as caught:
        parse_lora_arg("style.safetensors:0.8:lbw=1,0")
    assert "OUTALL" in caught.value.fix
