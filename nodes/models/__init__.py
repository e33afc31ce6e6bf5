"""The machinery of calling a model: settings, providers, clients, the call loop, budget, quorum."""
