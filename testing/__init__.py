"""Test support shipped with the package: a real OpenAI-compatible HTTP server on 127.0.0.1."""
