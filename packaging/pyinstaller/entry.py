"""The frozen app's entry point: `lora-studio [command]`, the same as the installed script."""

import multiprocessing
import sys

from lora_studio.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # a spawned worker process runs its task, not main()
    sys.exit(main())
