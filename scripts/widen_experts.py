"""The built-in model with every routed expert widened by zero columns: the same outputs, more expert work.

    python scripts/widen_experts.py OUT_DIR [--width 2048]

Each expert's `gate_proj`/`up_proj` rows and `down_proj` columns past the original width are zeros, so the
SwiGLU adds silu(0) * 0 = 0 through a zero column of `down_proj`: logits and routing are the built-in model's
(`tests/test_bench.py` checks greedy tokens), while each expert computes `width / 128` times as much. It makes
a model whose experts are most of its work with the built-in model's trained routing (number tables go to a
quarter of the experts), which a random checkpoint lacks: what `switchyard bench autoscale --forecast` needs
for a shift of traffic that moves load from one expert group to another.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo-model"


def widen(out: Path, width: int, source: Path = DEMO) -> Path:
    config = json.loads((source / "config.json").read_text())
    old = config["moe_intermediate_size"]
    if width < old:
        raise SystemExit(f"--width {width} is below the experts' width {old}")
    tensors = {}
    with safe_open(source / "model.safetensors", "pt") as f:
        for name in f.keys():
            t = f.get_tensor(name)
            if ".mlp.experts." in name and name.endswith(("gate_proj.weight", "up_proj.weight")):  # [I, H]
                t = torch.cat([t, t.new_zeros(width - old, t.shape[1])])
            elif ".mlp.experts." in name and name.endswith("down_proj.weight"):  # [H, I]
                t = torch.cat([t, t.new_zeros(t.shape[0], width - old)], dim=1)
            tensors[name] = t.contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    config["moe_intermediate_size"] = width
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for path in source.iterdir():
        if path.name not in ("config.json", "model.safetensors") and path.is_file():
            shutil.copy(path, out / path.name)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="folder to write (created)")
    p.add_argument("--width", type=int, default=2048, help="each expert's new width (the built-in model's: 128)")
    args = p.parse_args(argv)
    widen(args.out, args.width)
    print(f"wrote {args.out}: the built-in model, experts {args.width} wide", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
