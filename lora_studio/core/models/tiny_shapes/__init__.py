"""Tiny Shapes: a built-in text-to-image model that really draws, trained by the project.

`world` draws the scenes and writes their captions, `scorer` reads back what a picture shows,
`tokenizer` builds the small CLIP vocabulary, `train` trains the VAE, text encoder and UNet
from scratch, and `quality` measures a model (and a LoRA) with the scorer.
"""
