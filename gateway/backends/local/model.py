"""The weights and tokenizer of one local model, its LoRA adapters, and one blocking generate call.

Every method here runs on the backend's worker thread (the one thread that touches the model); none
knows about queues, event loops or HTTP.

An adapter is served as its own copy of the weights with the adapter merged in, not as LoRA layers
beside the base: on this 2-core CPU, best-of-4 batches of 64 rows generated 140 tokens/s through
PEFT's LoRA layers against 250 merged, and once PEFT wraps the model even the base weights (adapter
disabled) fell to 165. The price is one more copy of the weights per loaded adapter (270 MB for the
embedded SmolLM2 in bf16); a rollout holds at most two. The copy is built by loading the merged state
into a copy of the base: PEFT's `merge_and_unload` result itself generated at 170 tokens/s here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.backends.base import Candidate, Generation, GenerationRequest
from gateway.config import EMBEDDED_MODEL, ModelConfig
from gateway.errors import UpstreamError
from gateway.hardware import resolve_dtype

log = logging.getLogger(__name__)

# Loading a model is not thread-safe in transformers: its first lazy import of a class, and then
# from_pretrained, which sets process-wide state while it builds the model (torch's default dtype, the
# meta-device init context). Two local models loading at once (each on its own worker thread) failed with
# "ImportError: cannot import name 'AutoModelForCausalLM'", then with a model of mixed float32 and bfloat16
# weights. Loads take turns.
_LOADING = threading.Lock()

CONFIGURED_ADAPTER = "configured"  # the adapter name of `ModelConfig.adapter`, served when a request names none


def merged_copy(base: Any, adapter_dir: str) -> Any:
    """A copy of `base` with the LoRA adapter at `adapter_dir` merged into its weights (`base` is unchanged)."""
    import copy

    from peft import PeftModel

    merged_state = PeftModel.from_pretrained(copy.deepcopy(base), adapter_dir).merge_and_unload().state_dict()
    weights = copy.deepcopy(base)
    weights.load_state_dict(merged_state)
    return weights.eval()


def generation_failed(exc: Exception) -> UpstreamError:
    """A local generation's failure, as the upstream's failure it is to the engine (502)."""
    error = UpstreamError(f"local generation failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def answer_length(sequence: list[int], tokenizer: Any) -> int | None:
    """Tokens before the first end-of-turn (eos or pad) token; None if the answer never ended."""
    ends = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    return next((i for i, token in enumerate(sequence) if token in ends), None)


def truncate_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """`text` up to its first stop sequence, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def default_version(config: ModelConfig) -> str:
    """The model_version logged for a local model whose config names none."""
    base = "smollm2-135m-instruct" if config.model == EMBEDDED_MODEL else Path(config.model).name
    return f"{base}+{Path(config.adapter).name}" if config.adapter else base


class LocalModel:
    """A causal LM and its tokenizer, loaded once; `None` until `load` has run."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.model: Any = None
        self.tokenizer: Any = None
        self.context_tokens: int | None = None
        self._longest_token_chars = 1
        self._configured_adapter: str | None = None
        self._adapters: dict[str, Any] = {}  # name -> the weights with that adapter merged in

    @property
    def loaded(self) -> bool:
        return self.model is not None

    @property
    def dtype(self) -> str:
        """The weights' dtype as torch names it ("torch.bfloat16")."""
        return str(next(self.model.parameters()).dtype)

    def _directory(self) -> Path:
        if self.config.model == EMBEDDED_MODEL:
            from gateway.embedded import embedded_model_dir

            return embedded_model_dir()
        return Path(self.config.model)

    def load(self) -> None:
        with _LOADING:
            self._load_alone()

    def _load_alone(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = self._directory()
        log.info("loading %s from %s", self.config.name, path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, resolve_dtype(self.config.dtype)))
        model.eval()
        if self.config.adapter:  # kept apart from the base, which a rollout's adapters are merged into
            self._adapters[CONFIGURED_ADAPTER] = merged_copy(model, self.config.adapter)
            self._configured_adapter = CONFIGURED_ADAPTER
        self.context_tokens = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
        # byte-level BPE: a token's vocabulary entry has one character per byte, so no token covers more
        self._longest_token_chars = max(map(len, tokenizer.get_vocab()), default=1)
        self.model, self.tokenizer = model, tokenizer
        log.info("loaded %s (%s)", self.config.name, self.dtype)

    def load_adapter(self, name: str, path: str) -> None:
        with _LOADING:
            self._adapters[name] = merged_copy(self.model, path)

    def unload_adapter(self, name: str) -> None:
        self._adapters.pop(name, None)

    @contextmanager
    def weights_for(self, adapter: str | None) -> Iterator[Any]:
        """The weights that answer a request for `adapter` (or the configured one, or the base)."""
        wanted = adapter or self._configured_adapter
        if wanted is not None and wanted not in self._adapters:
            raise ValueError(f"adapter {wanted!r} is not loaded on {self.config.name}")
        yield self._adapters[wanted] if wanted is not None else self.model

    def refuse_if_too_long_to_read(self, request: GenerationRequest) -> None:
        """400 at once, before tokenizing, for a prompt with more characters than the context could
        hold even at the longest token: tokenizing 16 MB takes seconds, and generating from it far more.
        Reads only what `load` set, so it is safe off the worker thread."""
        if self.context_tokens is None:
            return
        chars = (len(request.prompt or "") if request.kind == "completion"
                 else sum(len(m.get("content") or "") for m in request.messages or []))
        if chars > self.context_tokens * self._longest_token_chars:
            raise self._too_long(f"more than {self.context_tokens} tokens ({chars} characters)", request)

    def check_context(self, request: GenerationRequest, prompt_tokens: int) -> None:
        """400 when the prompt and max_tokens do not fit the model's context (OpenAI's
        context_length_exceeded), instead of a generation that fails or crawls."""
        wanted = int(request.params.get("max_tokens", self.config.max_tokens) or 0)
        if self.context_tokens is not None and prompt_tokens + wanted > self.context_tokens:
            raise self._too_long(f"{prompt_tokens} tokens, and max_tokens asks for {wanted} more", request)

    def _too_long(self, size: str, request: GenerationRequest) -> UpstreamError:
        what = "messages" if request.kind == "chat" else "prompt"
        return UpstreamError(f"model {self.config.name} has a context of {self.context_tokens} tokens; the {what} "
                             f"resulted in {size}. Shorten the {what} or lower max_tokens.", status=400,
                             code="context_length_exceeded")

    def encode(self, request: GenerationRequest) -> Any:
        """The prompt as the model reads it (chat template applied), as tensors."""
        if request.kind == "chat":
            messages = [{"role": m["role"], "content": m.get("content") or ""} for m in request.messages or []]
            return self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
        return self.tokenizer(request.prompt or "", return_tensors="pt")

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        return self.encode(request)["input_ids"][0].tolist()

    def generate_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        """The sampling settings of one generate call (a request's own values, else the model's)."""
        params = request.params
        temperature = params.get("temperature", self.config.temperature)
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.get("max_tokens", self.config.max_tokens),
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if temperature and temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=params.get("top_p", self.config.top_p))
        else:
            kwargs.update(do_sample=False)
        return kwargs

    def call_settings(self, request: GenerationRequest) -> tuple[Any, ...]:
        """What one generate call fixes for all its rows: the adapter and the sampling settings."""
        return (request.adapter or self._configured_adapter, tuple(sorted(self.generate_kwargs(request).items())))

    def generate(self, requests: list[GenerationRequest], seed: int | None = None,
                 prompts: list[list[int]] | None = None) -> list[Generation]:
        """One generate call for every sample of `requests` (same adapter and sampling settings):
        prompts left-padded to one width, each repeated `n` times. `prompts`: their token ids, where
        the caller has encoded them already."""
        import torch

        prompts = prompts if prompts is not None else [self.prompt_ids(request) for request in requests]
        rows = [ids for request, ids in zip(requests, prompts) for _ in range(request.n)]
        width = max(len(ids) for ids in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in rows])
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in rows])
        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode(), self.weights_for(requests[0].adapter) as weights:
            output = weights.generate(input_ids=input_ids, attention_mask=attention_mask,
                                         **self.generate_kwargs(requests[0]))
        sequences = iter(output[:, width:].tolist())
        return [self._generation(request, [next(sequences) for _ in range(request.n)], len(ids))
                for request, ids in zip(requests, prompts)]

    def _generation(self, request: GenerationRequest, sequences: list[list[int]], prompt_tokens: int) -> Generation:
        stops = [s for s in (request.params.get("stop") or []) if s]
        candidates = []
        for sequence in sequences:
            ended = answer_length(sequence, self.tokenizer)
            tokens = sequence if ended is None else sequence[:ended]
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            text, stopped = truncate_at_stop(text, stops)
            finish = "stop" if ended is not None or stopped else "length"
            message = {"role": "assistant", "content": text} if request.kind == "chat" else None
            candidates.append(Candidate(text=text, finish_reason=finish, completion_tokens=len(tokens), message=message))
        return Generation(candidates=candidates, prompt_tokens=prompt_tokens, upstream_calls=1)
