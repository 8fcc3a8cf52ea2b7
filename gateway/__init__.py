"""TAO Gateway: an OpenAI-compatible best-of-N proxy that logs everything for distillation."""

import os

# LiteLLM fetches a model cost map over the network at import time and retries for seconds; this
# machine (and most production sandboxes) cannot reach it. Set before anything imports litellm.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

__version__ = "0.1.0"
