"""Keep library chatter (load bars, casting notes, optional-dependency hints) off the terminal.

The CLI calls this before any heavy import, so our own messages and progress bars stay readable;
`--debug` skips it.
"""

from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries() -> None:
    quiet_environment()
    try:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:  # only cosmetics; never stop a command for them
        pass


def quiet_environment() -> None:
    """The part that imports nothing (the app calls it in the GUI thread at start): variables
    the libraries read when imported, logger levels and warning filters."""
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # diffusers' "No LoRA keys associated to CLIPTextModel" note goes through peft/diffusers
    # loggers; our loader reports matched / unmatched modules itself.
    for name in ("diffusers", "transformers", "peft", "accelerate", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*torchvision.*")
    warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
