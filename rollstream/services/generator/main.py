"""`rollstream run generator [--config run.yaml] [--model DIR]`."""

from __future__ import annotations

from rollstream.services.runtime.config import section
from rollstream.services.runtime.stage import StageContext, stage_parser


def main(argv: list[str]) -> int:
    parser = stage_parser("generator", "Sample n completions per prompt; publish Rollouts.")
    parser.add_argument(
        "--model",
        default=None,
        help="Hugging Face model dir (default: run config, else the built-in model)",
    )
    parser.add_argument("--backend", default=None, choices=["auto", "vllm", "transformers"])
    ctx = StageContext.from_argv("generator", argv, parser)
    from rollstream.services.generator.config import GeneratorConfig

    cfg = section(ctx.cfg, "generator", GeneratorConfig)
    if ctx.args.backend:
        cfg.backend = ctx.args.backend
    from rollstream.services.generator.backend import make_backend, may_fork
    from rollstream.services.generator.service import Generator, join_prompts

    bus = None if may_fork(cfg.backend) else join_prompts(ctx)  # joins while the model loads
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    from rollstream.services.models.load import load_tokenizer, model_dir_of

    model_dir = model_dir_of(ctx.cfg.model, ctx.args.model)
    backend = make_backend(
        cfg.backend,
        model_dir,
        seed=ctx.cfg.seed,
        dtype=ctx.cfg.model.dtype,
        device=cfg.device,
        max_model_len=cfg.max_model_len,
        share_prompts=cfg.share_prompts,
        static_cache=cfg.static_cache,
        cuda_graphs=cfg.cuda_graphs,
        **cfg.vllm,
    )
    gen = Generator(ctx.start(), cfg, backend, load_tokenizer(model_dir), model_dir, bus)
    try:
        gen.run()
    finally:
        gen.close()
        ctx.close()
    return 0
