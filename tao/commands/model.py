"""`tao model export`: the embedded model as a servable directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="model weights")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    model_export = model_sub.add_parser(
        "export", help="write the embedded model as a servable directory",
        description="Write the embedded SmolLM2-135M-Instruct as a transformers directory (float safetensors, "
        "tokenizer, config): what vLLM serves and distill.base_model trains in deploy/ "
        "(tao model export --out deploy/models/SmolLM2-135M-Instruct). For a real model, download it instead "
        "(huggingface-cli download <repo> --local-dir deploy/models/<name>).")
    model_export.add_argument("--out", type=Path, required=True, help="target directory (new or empty)")
    model_export.set_defaults(run=export)


def export(args: argparse.Namespace) -> int:
    import shutil

    from gateway.embedded import embedded_model_dir

    source = embedded_model_dir()  # converts the GGUF once (~15 s), then reuses the float weights
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"tao model export: {args.out} exists and is not empty")
    shutil.copytree(source, args.out, dirs_exist_ok=True)
    print(f"wrote the embedded SmolLM2-135M-Instruct (float safetensors, tokenizer, config) to {args.out}: "
          "serve it with vLLM and set it as distill.base_model")
    return 0
