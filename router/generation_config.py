"""A model folder's `generation_config.json`: the sampling defaults its authors chose.

As vLLM's `--generation-config auto`: the sampling keys the file sets become the defaults of every request
that leaves them out, and anything a request (or a flag) gives explicitly wins. The keys are transformers'
`GenerationConfig` names; `presence_penalty` and `frequency_penalty` are read too (vLLM's override names).
Other keys (token ids, `max_new_tokens`, `do_sample`, ...) are not sampling defaults here and are ignored, as
vLLM ignores them; `do_sample` in particular is not read, so `temperature` alone decides greedy (0) or not.
A key that is set but out of range fails at load, naming the file and the key.

One difference from vLLM: an explicit temperature 0 asks for greedy decoding, the model's own argmax, so the
file's defaults (its penalties too) are dropped with it; penalties given explicitly beside it still apply.
"""

from __future__ import annotations

import json
from pathlib import Path

from switchyard.configs.model import ConfigError
from switchyard.router.sampling import InvalidParameter, SamplingParams

FILE = "generation_config.json"
# key -> the type its value must have (an int is a fine float; a bool is neither)
SAMPLING_KEYS: dict[str, type] = {"temperature": float, "top_p": float, "top_k": int, "repetition_penalty": float,
                                  "presence_penalty": float, "frequency_penalty": float}


def load_sampling_defaults(model_dir: str | Path) -> dict[str, float | int]:
    """The sampling keys that `model_dir/generation_config.json` sets, checked; {} when there is no file."""
    path = Path(model_dir) / FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a JSON object")
    defaults = {}
    for key, kind in SAMPLING_KEYS.items():
        if raw.get(key) is None:
            continue
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise ConfigError(f"{path}: {key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        defaults[key] = kind(value)
    if defaults.get("top_k") == -1:  # vLLM writes "no top-k" as -1; here it is 0
        defaults["top_k"] = 0
    try:
        SamplingParams(**defaults)
    except InvalidParameter as err:
        raise ConfigError(f"{path}: {err.param}: {err}") from err
    return defaults


def sampling_params(defaults: dict[str, float | int], **given) -> SamplingParams:
    """SamplingParams from the explicitly `given` fields (None = not given), else `defaults`, else
    SamplingParams' own; an explicit temperature 0 (greedy) takes no defaults."""
    given = {k: v for k, v in given.items() if v is not None}
    if given.get("temperature") == 0:
        defaults = {}
    return SamplingParams(**{**defaults, **given})
