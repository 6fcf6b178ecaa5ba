"""`--lora FILE[:WEIGHT][:lbw=BLOCKS][:start=SHARE]` parsing, Windows paths included."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_studio.core.errors import StudioError
from lora_studio.core.generate.cli_run import parse_lora_arg
from lora_studio.core.lora.block_weights import BlockWeights


def fields(entry) -> tuple:
    """(path, weight, block weights, start) of the StackEntry a `--lora` value gives."""
    return entry.path, entry.weight, entry.block_weights, entry.start


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
    assert fields(parse_lora_arg(arg)) == (Path(path), weight, None, 0.0)


def test_an_existing_file_whose_name_ends_in_a_number_wins(tmp_path):
    odd = tmp_path / "style:2"
    odd.write_bytes(b"")
    assert fields(parse_lora_arg(str(odd))) == (odd, 1.0, None, 0.0)
    assert fields(parse_lora_arg(f"{odd}:0.5")) == (odd, 0.5, None, 0.0)


@pytest.mark.parametrize("arg, path, weight, blocks", [
    ("style.safetensors:0.8:lbw=OUTALL", "style.safetensors", 0.8, "OUTALL"),
    ("style.safetensors:lbw=outs", "style.safetensors", 1.0, "OUTS"),
    (r"C:\x\y.safetensors:0.5:LBW=0,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1", r"C:\x\y.safetensors",
     0.5, "NO_TE"),
])
def test_parse_lora_arg_with_block_weights(arg, path, weight, blocks):
    assert fields(parse_lora_arg(arg)) == (Path(path), weight, BlockWeights.parse(blocks), 0.0)


@pytest.mark.parametrize("arg, weight, blocks, start", [
    ("style.safetensors:0.8:start=0.5", 0.8, None, 0.5),
    ("style.safetensors:start=0.4:lbw=OUTS", 1.0, "OUTS", 0.4),
    ("style.safetensors:0.7:lbw=OUTS:START=0.25", 0.7, "OUTS", 0.25),
])
def test_parse_lora_arg_with_a_start(arg, weight, blocks, start):
    expected = BlockWeights.parse(blocks) if blocks else None
    assert fields(parse_lora_arg(arg)) == (Path("style.safetensors"), weight, expected, start)


@pytest.mark.parametrize("bad", ["1", "-0.1", "half"])
def test_a_start_that_is_not_a_share_of_the_steps_says_what_to_write(bad):
    with pytest.raises(StudioError, match="share of the steps") as caught:
        parse_lora_arg(f"style.safetensors:0.8:start={bad}")
    assert "start=0.5" in caught.value.fix


def test_bad_block_weights_on_the_command_line_say_what_to_write():
    with pytest.raises(StudioError, match="got 2") as caught:
        parse_lora_arg("style.safetensors:0.8:lbw=1,0")
    assert "OUTALL" in caught.value.fix
