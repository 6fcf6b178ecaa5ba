"""PySide6 studio window (see shared DESIGN.md); the engine lives in lora_studio.core."""
