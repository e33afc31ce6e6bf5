"""The machinery of calling a model, one concern per module.

- settings.py: ``ModelSettings``, one model's effective settings (spec + run defaults)
- catalog.py (+ catalog.toml): what is known about providers and models (keys, windows)
- providers.py: the registry turning ``provider:model`` into a LangChain chat model
- resources.py: ``RESOURCES``, the one owner of clients, chat models and gates (and their scope)
- http.py / cache.py: shared HTTP clients; chat models built once per setting and event loop
- redact.py: API keys kept out of errors and output (http.py masks them in error replies)
- ask.py: ``ask_model``, the one path of every call: build, fit to the window, call
- calls.py: one call with timeouts and retries, failures classified
- budget.py: fitting a request to the model's context window
- quorum.py: cutting a layer's stragglers (the quorum, and the default straggler grace)
- local.py: the embedded llama.cpp model (``local:smollm2``)
"""

from langgraph_moa.nodes.models.ask import ask_model
from langgraph_moa.nodes.models.calls import CallFailedError, CallResult
from langgraph_moa.nodes.models.settings import ModelSettings, settings_for

__all__ = ["CallFailedError", "CallResult", "ModelSettings", "ask_model", "settings_for"]
