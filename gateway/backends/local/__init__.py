"""transformers on this machine: the embedded SmolLM2 by default, any causal LM directory otherwise.

One concern per module: `model` holds the weights, the tokenizer and their adapters and runs one blocking
generate call; `batching` lets requests that queue for the model share a call; `streaming` sends one
answer token by token; `backend` puts them behind the `Backend` protocol on one worker thread.
"""

from gateway.backends.local.backend import LocalBackend

__all__ = ["LocalBackend"]
