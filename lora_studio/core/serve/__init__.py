"""`lora-studio serve`: one base model behind a local, A1111-compatible HTTP API.

- `library`: the LoRA folder (A1111's `/sdapi/v1/loras` list, `<lora:name>` → file) and the
  adapter pool (LoRAs loaded on first use, kept up to a bound, least recently used unloaded).
- `progress`: the running job's state, read by `/sdapi/v1/progress` while it renders.
- `api`: request / response mapping without HTTP (A1111's field names and shapes).
- `server`: the stdlib `http.server` glue (routes, JSON errors, loopback / bearer token).
- `cli_run`: the command's arguments and start-up.
"""
