"""Where the built-in default model lives, and how a model argument is resolved."""

from __future__ import annotations

from pathlib import Path

DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo-model"


def resolve_model(model: str | None) -> Path:
    """A model folder given by the user, or the built-in demo model."""
    path = Path(model) if model else DEMO_MODEL_DIR
    if not (path / "config.json").is_file():
        if model is None:
            raise SystemExit(f"the built-in model is missing at {path}; pass --model DIR (a Hugging Face "
                             "folder with config.json and *.safetensors)")
        raise SystemExit(f"{path}: not a model folder (no config.json); Switchyard loads local Hugging Face "
                         "folders: config.json, *.safetensors, tokenizer.json")
    return path
