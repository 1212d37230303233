"""The OpenAI-compatible HTTP API (plain FastAPI, no Ray): routes, request parsing, choices, logprobs, API keys, and the /v1/switchyard/ placement routes."""
