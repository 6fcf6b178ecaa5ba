"""Generation: a long-lived pipeline session with LoRAs on sliders, A1111 samplers and PNG info.

    from lora_studio.core.generate.session import GenerationSession, GenerationRequest
    session = GenerationSession("~/models/v1-5.safetensors")     # loaded on first use, once
    report = session.set_stack([StackEntry("style.safetensors", 0.8),    # the whole stack:
                                StackEntry("ink.safetensors", 0.5, start=0.4)])  # loads, removes,
    session.set_stack([StackEntry("style.safetensors", 0.5,              # one adapter pass
                                  block_weights=BlockWeights.parse("OUTALL")),  # (A1111 LBW)
                       StackEntry("ink.safetensors", 0.5, start=0.4)])
    images = session.generate(GenerationRequest("a cat", sampler="DPM++ 2M Karras", seed=1,
                                                 out_dir=Path("out")), emit=print)

Modules: `samplers` (A1111/ComfyUI names → diffusers schedulers), `pnginfo` (the A1111
`parameters` text, `<lora:...>` tags, model hash, PNG read/write), `preview` (per-step latent
previews and the step callback), `adapters` (strengths and block weights → `set_adapters`,
and a slider move → only that adapter's layers), `lycoris_layers` (LoHa / LoKr / DoRA /
full-difference files as patched layers beside the PEFT adapters),
`stack` (the stack's one record, `StackEntry`, and `StackReport`), `session`, `cli_run`
(`lora-studio generate`).
Submodules are imported directly; importing this package is cheap.
"""
