"""`tao vllm`: start a vLLM server for a model directory with the flags the gateway needs."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    vllm = sub.add_parser(
        "vllm", help="start vLLM for a model directory, ready for the gateway's rollouts (runtime LoRA)",
        description="Start vLLM's OpenAI-compatible server for MODEL_DIR (e.g. what `tao model export --out DIR` "
        "writes) with --enable-lora, --max-lora-rank and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, wait until it is "
        "ready, and print the gateway config that points at it. vLLM usually lives in an environment of its own "
        "(--python, or $TAO_VLLM_PYTHON): see docs/operations/vllm.md. Arguments after -- go to vLLM as they are. "
        "Runs until stopped (Ctrl-C or SIGTERM stops vLLM too).")
    vllm.add_argument("model_dir", type=Path)
    vllm.add_argument("--port", type=int, default=8001, help="default: %(default)s")
    vllm.add_argument("--name", default="base", help="the served model name (default: %(default)s)")
    vllm.add_argument("--max-lora-rank", type=int, default=16,
                      help="at least distill's lora.r; set distill.serving_max_lora_rank to the same (default: "
                      "%(default)s)")
    vllm.add_argument("--dtype", default="bfloat16", help="default: %(default)s")
    vllm.add_argument("--memory-fraction", type=float, help="--gpu-memory-utilization: the share of GPU memory, or "
                      "on the CPU build of RAM, for weights and KV cache (default: vLLM's 0.92 on a GPU, 0.15 on CPU)")
    vllm.add_argument("--python", help="the vLLM environment's interpreter (default: $TAO_VLLM_PYTHON, else this one)")
    vllm.add_argument("vllm_args", nargs=argparse.REMAINDER, help="-- then vLLM's own flags")
    vllm.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import signal

    from tao.vllm_server import VllmServer, VllmUnavailable

    extra = args.vllm_args[1:] if args.vllm_args[:1] == ["--"] else args.vllm_args
    server = VllmServer(args.model_dir, args.port, served_name=args.name, max_lora_rank=args.max_lora_rank,
                        dtype=args.dtype, memory_fraction=args.memory_fraction, python=args.python, extra_args=extra)

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.start()
        print(" ".join(server.process.args), flush=True)
        server.wait_ready(timeout_s=900)
        print(f"vLLM is ready at {server.url}/v1. In the gateway's config:\n"
              f"  models:\n    - name: {args.name}\n      backend: litellm\n      model: hosted_vllm/{args.name}\n"
              f"      api_base: {server.url}/v1\n      api_key: none\n"
              f"  distill: {{base_model: {args.model_dir.resolve()}, serving_max_lora_rank: {args.max_lora_rank}}}",
              flush=True)
        return server.process.wait()
    except VllmUnavailable as exc:
        raise SystemExit(f"tao vllm: {exc}") from None
    finally:
        server.stop()
