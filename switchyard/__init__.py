"""Switchyard: serve Mixture-of-Experts language models on Ray.

The offline Python API, named as vLLM names it:

    from switchyard import LLM, SamplingParams

    llm = LLM()  # the built-in model
    for out in llm.generate(["The history of"], SamplingParams(max_tokens=32)):
        print(out.outputs[0].text)

The names are imported on first use, so that `import switchyard.router.engine` (or the CLI) does not pay for
them. The subpackages (`switchyard.configs`, `.cluster`, `.router`, `.experts`) are the repository's top-level
folders, mapped in pyproject.toml.
"""

from __future__ import annotations

import importlib

# name -> the module that defines it
_EXPORTS = {
    "LLM": "switchyard.router.llm",
    "SamplingParams": "switchyard.router.llm_params",
    "RequestOutput": "switchyard.router.llm_outputs",
    "CompletionOutput": "switchyard.router.llm_outputs",
    "Logprob": "switchyard.router.llm_outputs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'switchyard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later look-ups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
