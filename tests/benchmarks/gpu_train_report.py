"""The table of tests/benchmarks/gpu_train.py: anchors, text, markdown and JSON output."""

from __future__ import annotations

import json
from pathlib import Path

# Published figures for a rank-16 LoRA on an H100 (printed beside ours, never asserted).
# (No published SD 1.5 figure with checkpointing: its row is compared with the plain one.)
ANCHORS = {"sd15": {"it_s": 5.5, "gib": 2.9, "gib_gc": 2.9},
           "sdxl": {"it_s": 1.65, "gib": 13.0, "gib_gc": 6.5}}


def anchor_text(family: str, checkpointing: bool, row: dict, smoke: bool) -> str:
    """The published figures of a case's family, and our ratio to them (not in smoke runs)."""
    a = ANCHORS[family]
    gib = a["gib_gc"] if checkpointing else a["gib"]
    text = f"{a['it_s']:.2f} it/s {gib:.1f} GiB"
    if not smoke and row.get("it_s") and row.get("peak_train_gib") is not None:
        text += f" (ours x{row['it_s'] / a['it_s']:.2f}, x{row['peak_train_gib'] / gib:.2f})"
    return text


def fmt(value, spec: str) -> str:
    """A number as `spec` formats it, "-" for none."""
    return "-" if value is None else format(value, spec)


COLUMNS = ("case", "settings", "px", "it/s", "samples/s", "x first", "peak train GiB",
           "peak all GiB", "setup s", "wall s", "anchor: speed, mem (H100)", "note")


def table_cells(rows: list[dict]) -> list[list[str]]:
    return [[r["case"], r["settings"], str(r["resolution"]), fmt(r.get("it_s"), ".2f"),
             fmt(r.get("samples_s"), ".2f"), fmt(r.get("x_first"), ".2f"),
             fmt(r.get("peak_train_gib"), ".2f"), fmt(r.get("peak_all_gib"), ".2f"),
             fmt(r.get("setup_s"), ".0f"), fmt(r.get("wall_s"), ".0f"), r["anchor"],
             "; ".join(filter(None, [r.get("note"), r.get("error")]))] for r in rows]


def render_text(rows: list[dict]) -> str:
    cells = [list(COLUMNS)] + table_cells(rows)
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in cells)


def write_report(path: Path, env: dict, rows: list[dict]) -> list[Path]:
    """`--out`: a .json or .md file, or both (<out>.json and <out>.md) for any other name."""
    md = ["# LoRA training benchmark (tests/benchmarks/gpu_train.py)", ""]
    md += [f"- {k}: {v}" for k, v in env.items()] + ["", "| " + " | ".join(COLUMNS) + " |",
                                                      "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(cells) + " |" for cells in table_cells(rows)]
    text = {".json": json.dumps({"env": env, "anchors": ANCHORS, "results": rows}, indent=2),
            ".md": "\n".join(md) + "\n"}
    targets = ([path] if path.suffix in text
               else [path.with_name(path.name + suffix) for suffix in text])
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text[target.suffix])
    return targets


def print_summary(env: dict, rows: list[dict]) -> None:
    a, b = ANCHORS["sd15"], ANCHORS["sdxl"]
    print(f"\nUNet attention processors seen: {env['unet attention processors (seen)']} "
          "(AttnProcessor2_0 calls torch.nn.functional.scaled_dot_product_attention)")
    print(f"Anchors (published, H100, rank 16): SD 1.5 512 px ~{a['it_s']} it/s, {a['gib']} "
          f"GiB; SDXL 1024 px ~{b['it_s']} it/s, {b['gib']} GiB ({b['gib_gc']} GiB with "
          "gradient checkpointing). 'x first' = it/s over the family's first case.\n")
    print(render_text(rows))
    print(f"\ntotal {env['total s']} s")
