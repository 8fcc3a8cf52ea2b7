"""The proof that matters: does the distilled checkpoint serve at N=1 what best-of-N served?

    python -m bench.distill_gain [--prompts 300] [--best-of 8] [--method dpo] [--max-steps 120]

1. serves the embedded SmolLM2 with the default (instruction-following) scorer;
2. sends `--prompts` generated instruction-following prompts through it at best-of-N;
3. runs the distill job on the log (its held-out prompts are never trained on);
4. prints, on the held-out prompts: base N=1, base best-of-N, distilled N=1, the share of the
   best-of-N gain recovered, and tokens generated per served answer.
Everything runs on this CPU; with 300 prompts at best-of-8 the traffic takes ~30 min on 2 cores.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, Field

from distill.job import run_distill
from gateway.app import create_app
from gateway.config import DistillConfig, DistillMethod, Settings, StoreConfig, default_models, with_updates
from tao.console import print_outcome
from tao.demo.prompts import generate_prompts
from tao.demo.workload import send_workload
from tao.flags import add_field_flags, field_values
from tao.server_thread import serve_in_thread


class DistillGainConfig(BaseModel):
    """The benchmark's options: bigger than the demo's, to measure rather than to show."""

    prompts: int = Field(300, ge=1, description="Prompts in the best-of-N traffic.")
    best_of: int = Field(8, ge=1, description="N of the traffic.")
    method: DistillMethod = Field(DistillConfig.model_fields["method"].default, description="Distill method.")
    max_steps: int = Field(120, ge=1, description="Training steps.")
    max_tokens: int = Field(64, ge=1, description="Tokens per generated answer.")
    seed: int = Field(0, description="Prompt generator and training seed.")
    workdir: Path | None = Field(None, description="Keep the database and checkpoints here (else a temp dir).")
    reuse_log: bool = Field(False, description="Skip the traffic if the workdir has a log.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_field_flags(parser, DistillGainConfig, "bench")
    opts = DistillGainConfig.model_validate(field_values(parser.parse_args(), "bench"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="tao-distill-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        models=[with_updates(m, max_tokens=opts.max_tokens) for m in default_models()],
        store=StoreConfig(path=workdir / "tao.db"),
        distill=DistillConfig(method=opts.method, max_steps=opts.max_steps, checkpoints_dir=workdir / "checkpoints",
                              seed=opts.seed, max_new_tokens=opts.max_tokens, min_heldout_prompts=4),
    )
    started = time.time()
    if not (opts.reuse_log and (workdir / "tao.db").exists()):
        with serve_in_thread(create_app(settings), startup_timeout_s=300) as url:
            prompts = generate_prompts(opts.prompts, seed=opts.seed)
            results = send_workload(url + "/v1", settings.distill.model, prompts, best_of=opts.best_of,
                                    concurrency=2, desc=f"best-of-{opts.best_of} traffic")
        failed = [r for r in results if r.error]
        print(f"traffic: {len(results) - len(failed)} ok, {len(failed)} failed, {time.time() - started:.0f} s")
    outcome = run_distill(settings, since=0.0)
    print_outcome(outcome)
    print(f"prompts {opts.prompts}, best_of {opts.best_of}, method {opts.method}, max_steps {opts.max_steps}, "
          f"seed {opts.seed}, total {time.time() - started:.0f} s, workdir {workdir}")


if __name__ == "__main__":
    main()
