"""Base models: the tiny model factory, architecture detection and loading of real models."""
