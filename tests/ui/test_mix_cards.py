"""A1111 cards in the Mix tab (issue 23): the library shows a card's activation text, preferred
weight and notes; "Add to stack" uses the preferred weight; "Copy prompt tags" puts each
activation text after its tag, as A1111 does; a damaged card is ignored with a visible note."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication

from lora_studio.core.lora.card import card_path
from lora_studio.core.lora.formats import write_lora
from lora_studio.core.lora.model import LoraFile, LoraModule

_Q = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


def write_card(lora: Path, **keys) -> None:
    card_path(lora).write_text(json.dumps({k.replace("_", " "): v for k, v in keys.items()},
                                          indent=4), encoding="utf-8")


@pytest.fixture
def lora_dir(tmp_path) -> Path:
    """Small SD 1.x LoRA files; `star` and `wrong` with cards, `broken` with a damaged one."""
    gen = torch.Generator().manual_seed(0)
    for name in ("star", "ink", "broken", "wrong"):
        module = LoraModule(torch.randn(4, 320, generator=gen), torch.randn(320, 4, generator=gen),
                            4.0)
        write_lora(LoraFile({_Q: module}, {"ss_output_name": name}, arch="sd1"),
                   tmp_path / f"{name}.safetensors")
    write_card(tmp_path / "star.safetensors", description="a star", sd_version="SD1",
               activation_text="zqstar, shiny", preferred_weight=0.7, negative_text="blurry",
               notes="best on dark backgrounds")
    card_path(tmp_path / "broken.safetensors").write_text("{oops", encoding="utf-8")
    write_card(tmp_path / "wrong.safetensors", activation_text="wrongtok",
               preferred_weight="heavy")
    return tmp_path


@pytest.fixture
def tab(make_window, lora_dir, qtbot):
    window = make_window()
    tab = window.mix_tab
    tab.library.add_folder(lora_dir)
    qtbot.waitUntil(lambda: len(tab.library.items) == 4 and not any(
        item.loading for item in tab.library.items), timeout=30_000)
    return tab


def item_text(tab, name: str) -> str:
    panel = tab.library_panel
    for row in range(panel.list.count()):
        if Path(panel.list.item(row).data(Qt.UserRole)).stem == name:
            return panel.list.item(row).text()
    raise AssertionError(f"{name} not listed")


def test_the_library_shows_the_card(tab, lora_dir):
    text = item_text(tab, "star")
    assert "activation text: zqstar, shiny" in text and "preferred weight: 0.7" in text
    tab.library_panel.select(lora_dir / "star.safetensors")
    details = tab.library_panel.details.toPlainText()
    for shown in ("A1111 card (star.json)", "zqstar, shiny", "preferred weight: 0.7",
                  "notes: best on dark backgrounds", "negative text: blurry"):
        assert shown in details
    assert "activation text" not in item_text(tab, "ink")  # no card, nothing made up


def test_add_to_stack_uses_the_preferred_weight_and_tags_carry_the_activation_text(
        tab, lora_dir, qtbot):
    for name in ("star", "ink"):
        tab.library_panel.select(lora_dir / f"{name}.safetensors")
        qtbot.mouseClick(tab.library_panel.stack_button, Qt.LeftButton)
    assert [(e.name, e.weight) for e in tab.model.stack] == [("star", 0.7), ("ink", 1.0)]
    assert tab.row(lora_dir / "star.safetensors").weight == 0.7
    expected = "<lora:star:0.7> zqstar, shiny <lora:ink:1>"
    assert tab.copy_prompt_tags() == expected
    assert QGuiApplication.clipboard().text() == expected
    assert tab.add_to_stack(lora_dir / "wrong.safetensors", 0.4)  # a weight given wins
    assert tab.model.entry(lora_dir / "wrong.safetensors").weight == 0.4


def test_a_damaged_card_is_ignored_with_a_visible_note(tab, lora_dir):
    assert "card: broken.json is not valid JSON" in item_text(tab, "broken")
    assert "activation text" not in item_text(tab, "broken")
    assert tab.add_to_stack(lora_dir / "broken.safetensors")
    assert tab.model.entry(lora_dir / "broken.safetensors").weight == 1.0
    assert "broken.json is not valid JSON" in tab.stack_status.text()

    wrong = item_text(tab, "wrong")  # a bad key is dropped; the rest of the card is used
    assert "activation text: wrongtok" in wrong
    assert '"preferred weight" is not a number' in wrong
    assert tab.add_to_stack(lora_dir / "wrong.safetensors")
    assert tab.model.entry(lora_dir / "wrong.safetensors").weight == 1.0
    assert tab.copy_prompt_tags() == "<lora:broken:1> <lora:wrong:1> wrongtok"


def test_rescan_reads_a_card_edited_in_a1111(tab, lora_dir):
    assert "activation text" not in item_text(tab, "ink")
    write_card(lora_dir / "ink.safetensors", activation_text="inkwash style",
               preferred_weight=1.3)
    tab.library.rescan()
    assert "activation text: inkwash style" in item_text(tab, "ink")
    assert tab.add_to_stack(lora_dir / "ink.safetensors")
    assert tab.model.entry(lora_dir / "ink.safetensors").weight == 1.3
