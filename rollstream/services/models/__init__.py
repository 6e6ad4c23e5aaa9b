"""Models: the built-in char tokenizer and base model, loading any Hugging Face model
directory, held-out evaluation, and the weight store. Used by the generator, learner and
evaluator.

Importing this package is free: torch and transformers are imported inside the functions of
its modules, never here. Modules:

- `tokenizer`: the character-level tokenizer (no download), saved as a HF tokenizer.
- `build`: `init_model(out_dir, seed)` builds and warms up the tiny Llama base model;
  `init_model_cli` is `rollstream init-model`.
- `warmup`: the gated supervised warm-up that leaves the model partly competent.
- `load`: `load_model`, `load_tokenizer`, `default_model_dir`, `ensure_base_model`,
  `model_dir_of`.
- `evaluate`: greedy held-out accuracy, batched with left padding and a KV cache.
- `weights`: `publish_version` / `fetch_version` (safetensors + sha256, directory or fsspec).
"""
