"""LoRA Studio: train, mix and generate with Stable Diffusion LoRAs."""

__version__ = "0.1.0"
