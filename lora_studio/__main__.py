"""`python -m lora_studio ...` is the same as the `lora-studio` command."""

from lora_studio.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
