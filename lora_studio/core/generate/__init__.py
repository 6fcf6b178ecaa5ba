"""Generation: a long-lived pipeline session with LoRAs on sliders, A1111 samplers and PNG info.

    from lora_studio.core.generate.session import GenerationSession, GenerationRequest
    session = GenerationSession("~/models/v1-5.safetensors")     # loaded on first use, once
    session.add_lora("style.safetensors", weight=0.8)            # -> LoadReport (matched/total)
    session.set_weight("style", 0.5)                             # that LoRA's scales only
    session.set_block_weights("style", BlockWeights.parse("OUTALL"))  # per-block (A1111 LBW)
    images = session.generate(GenerationRequest("a cat", sampler="DPM++ 2M Karras", seed=1,
                                                 out_dir=Path("out")), emit=print)

Modules: `samplers` (A1111/ComfyUI names → diffusers schedulers), `pnginfo` (the A1111
`parameters` text, `<lora:...>` tags, model hash, PNG read/write), `preview` (per-step latent
previews and the step callback), `adapters` (strengths and block weights → `set_adapters`,
and a slider move → only that adapter's layers), `lycoris_layers` (LoHa / LoKr / DoRA /
full-difference files as patched layers beside the PEFT adapters),
`session`, `cli_run` (`lora-studio generate`).
Submodules are imported directly; importing this package is cheap.
"""
