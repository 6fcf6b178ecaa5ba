"""`lora-studio serve`: load the base model once, then answer A1111-style API requests.

    lora-studio serve --model MODEL --lora-dir LORAS [--port 7861] [--host 127.0.0.1]
                      [--token SECRET] [--max-loaded 8] [--device auto] [--dtype fp32]

The model loads before the server listens, so a model that cannot load fails at start (exit 2)
and the first request is not slowed by it. Listening beyond loopback needs a token (exit 2
otherwise); `LORA_STUDIO_API_TOKEN` gives it without putting it on the command line.
Ctrl+C stops the server.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lora_studio.core.errors import StudioError

DEFAULT_PORT = 7861
TOKEN_ENV = "LORA_STUDIO_API_TOKEN"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `serve` on the top-level command parser."""
    p = sub.add_parser("serve", help="serve one base model and hot-swapped LoRAs over an "
                       "AUTOMATIC1111-compatible local API (/sdapi/v1/txt2img, ...)")
    p.add_argument("--model", default=None, help="diffusers folder, hub id or checkpoint file "
                   "(default: the built-in tiny model)")
    p.add_argument("--lora-dir", type=Path, default=None, help="folder of LoRA files, searched "
                   "recursively; prompts name them as <lora:FILE_STEM:weight> (default: the "
                   "studio's LoRA folder)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"(default {DEFAULT_PORT}; "
                   "0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                   "127.0.0.1: this machine only; any other needs --token)")
    p.add_argument("--token", default=None, help="require `Authorization: Bearer TOKEN` on "
                   f"every request (or set {TOKEN_ENV})")
    p.add_argument("--max-loaded", type=int, default=8, help="LoRAs kept loaded; the least "
                   "recently used beyond this are unloaded (default 8)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), "
                   "cpu, cuda, cuda:1, mps")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"),
                   help="weights precision (default fp32)")
    p.add_argument("--quiet", action="store_true", help="no line per request")
    p.set_defaults(handler=run_serve)


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def build_server(args: argparse.Namespace):
    """The listening server for parsed arguments (model loaded); StudioError when it cannot."""
    from lora_studio.core.generate.session import GenerationSession
    from lora_studio.core.paths import user_data_dir
    from lora_studio.core.serve.api import ServeApi
    from lora_studio.core.serve.library import AdapterPool, LoraLibrary
    from lora_studio.core.serve.server import ApiServer, check_host

    token = args.token or os.environ.get(TOKEN_ENV) or None
    check_host(args.host, token)  # before the model loads: refuse at once
    if args.max_loaded < 1:
        raise StudioError(f"--max-loaded {args.max_loaded}: must be at least 1.")
    lora_dir = args.lora_dir or user_data_dir() / "loras"
    if args.lora_dir is not None and not lora_dir.is_dir():
        raise StudioError(f"LoRA folder not found: {lora_dir}", "Check --lora-dir.")
    dtype = None if args.dtype == "fp32" else args.dtype
    session = GenerationSession(args.model, device=_device(args.device), torch_dtype=dtype)
    api = ServeApi(session, LoraLibrary(lora_dir), AdapterPool(args.max_loaded))
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        return ApiServer(api, args.host, args.port, token, log)
    except OSError as exc:
        raise StudioError(f"Cannot listen on {args.host}:{args.port}: {exc.strerror or exc}.",
                          "Pick another --port (or stop what uses this one).") from None


def run_serve(args: argparse.Namespace) -> int:
    server = build_server(args)
    api = server.api
    print(f"Serving {api.model.name} on {server.url} (LoRAs from {api.library.folder}); "
          "Ctrl+C stops.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("Stopped.", file=sys.stderr)
    finally:
        server.server_close()
    return 0
