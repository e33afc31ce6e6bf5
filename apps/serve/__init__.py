"""``moa serve``: Mixture-of-Agents as an OpenAI-compatible model, with LangServe routes.

Needs the ``serve`` extra (FastAPI, uvicorn, sse-starlette, LangServe); ``settings`` alone does
not, so the CLI can show the defaults without it.
"""
