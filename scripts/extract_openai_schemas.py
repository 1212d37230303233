"""Extract the few schemas of OpenAI's published OpenAPI document that tests/test_openai_spec.py validates
against, into tests/data/openai_spec/schemas.json.

The source is the public repository https://github.com/openai/openai-openapi (`openapi.yaml`), read from a local
clone at a named commit:

    python scripts/extract_openai_schemas.py /path/to/openai-openapi.git                 # the commit in the file
    python scripts/extract_openai_schemas.py /path/to/openai-openapi.git --commit HEAD   # a newer one

What it does to the spec's text, and nothing else:
- keeps the schemas named in ROOTS and every schema they `$ref`, transitively, under `components.schemas`, so
  the file is a JSON Schema document whose `#/components/schemas/...` references resolve in it;
- drops documentation-only keys (`description`, `example`, `x-oaiMeta`, ...);
- rewrites OpenAPI 3.0's `nullable: true`, which the document (declared `openapi: 3.1.0`) still uses in places
  beside 3.1's `anyOf: [..., {type: "null"}]`, into the 3.1 form: JSON Schema validators ignore `nullable`, so
  left alone it would make those fields wrongly refuse `null`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "openai_spec" / "schemas.json"
REPOSITORY = "https://github.com/openai/openai-openapi"
SPEC_FILE = "openapi.yaml"
ROOTS = ("CreateCompletionRequest", "CreateCompletionResponse", "CreateChatCompletionRequest",
         "CreateChatCompletionResponse", "CreateChatCompletionStreamResponse", "ErrorResponse",
         "ListModelsResponse")
DOC_KEYS = {"description", "example", "examples", "title", "deprecated", "x-oaiMeta", "x-oaiExpandable",
            "x-oaiTypeLabel", "x-stainless-const"}
PREFIX = "#/components/schemas/"


def read_spec(git_dir: Path, commit: str) -> tuple[str, dict]:
    """(the full commit id, the parsed openapi.yaml at it)."""
    full = subprocess.run(["git", "-C", str(git_dir), "rev-parse", commit], check=True, capture_output=True,
                          text=True).stdout.strip()
    text = subprocess.run(["git", "-C", str(git_dir), "show", f"{full}:{SPEC_FILE}"], check=True,
                          capture_output=True, text=True).stdout
    return full, yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def clean(node):
    """`node` without documentation keys, with `nullable: true` written as 3.1's anyOf-with-null."""
    if isinstance(node, list):
        return [clean(item) for item in node]
    if not isinstance(node, dict):
        return node
    nullable = node.get("nullable") is True
    out = {}
    for key, value in node.items():
        if key in DOC_KEYS or key == "nullable":
            continue
        # `properties` and `$defs`-like maps hold names, not keywords: a property called `description` stays
        out[key] = {k: clean(v) for k, v in value.items()} if key == "properties" else clean(value)
    if nullable:
        return {"anyOf": [out, {"type": "null"}]}
    return out


def references(node) -> set[str]:
    if isinstance(node, list):
        return set().union(*(references(item) for item in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = {node["$ref"][len(PREFIX):]} if isinstance(node.get("$ref"), str) else set()
    return found.union(*(references(v) for v in node.values()))


def extract(spec: dict, roots=ROOTS) -> dict[str, dict]:
    schemas = spec["components"]["schemas"]
    wanted, todo = {}, list(roots)
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        wanted[name] = clean(schemas[name])
        todo.extend(references(wanted[name]) - wanted.keys())
    return dict(sorted(wanted.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("git_dir", type=Path, help="a clone (or bare mirror) of openai/openai-openapi")
    parser.add_argument("--commit", help="default: the commit already named in the output file")
    args = parser.parse_args()
    commit = args.commit or json.loads(OUT.read_text())["x-source"]["commit"]
    full, spec = read_spec(args.git_dir, commit)
    document = {
        "x-source": {"repository": REPOSITORY, "commit": full, "file": SPEC_FILE, "openapi": spec["openapi"],
                     "generated_by": "scripts/extract_openai_schemas.py"},
        "components": {"schemas": extract(spec)},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    print(f"{OUT.relative_to(ROOT)}: {len(document['components']['schemas'])} schemas from {REPOSITORY} at {full}")


if __name__ == "__main__":
    main()
