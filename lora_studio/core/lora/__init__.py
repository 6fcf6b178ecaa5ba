"""LoRA files: the layout-neutral model, kohya / diffusers / PEFT layouts, metadata, hashes,
inspection and loading into a diffusers pipeline.

Import the submodules directly (`from lora_studio.core.lora.formats import read_lora`); this
package itself imports nothing heavy, so importing it stays cheap.
"""
