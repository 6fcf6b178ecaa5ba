"""Qt-free engine: everything the app can do, callable from Python and the CLI.

Nothing under `lora_studio.core` may import Qt (tests/core/test_no_qt.py enforces it).
"""
