"""The README and docs/ say only what runs: every command in a ```bash block parses with the real argument
parser (nothing is executed), the files it names exist, and every relative link and #anchor resolves.

Blocks fenced as ```bash are the runnable ones, run from the repository root; examples that are not meant to
be pasted as they are go in ```text (or another language) blocks.
"""

from __future__ import annotations

import argparse
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

from switchyard.cluster.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
# arguments that name a file of the repository (or the shared data beside it) must name one that exists
REPO_PATHS = ("configs/", "scripts/", "helm/", "docs/", "tests/", "../shared/")


def bash_commands(page: Path) -> list[list[str]]:
    """Each simple command of the page's ```bash blocks, as words (comments, continuations, && ; | split)."""
    commands = []
    for block in FENCE.findall(page.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            current: list[str] = []
            for word in words + ["&&"]:
                if word in ("&&", "||", ";", "|"):
                    if current:
                        commands.append(current)
                    current = []
                else:
                    current.append(word)
    return commands


def all_commands() -> list[tuple[str, list[str]]]:
    return [(f"{page.relative_to(REPO)}: {shlex.join(cmd)}", cmd) for page in PAGES for cmd in bash_commands(page)]


class Parsed(Exception):
    """Raised instead of running the script once its arguments parsed."""


def parse_script(script: Path, argv: list[str]) -> None:
    """Parse `argv` with the script's own argparse parser, then stop before it does anything."""
    original = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        original(self, args, namespace)
        raise Parsed

    old_argv, sys.argv = sys.argv, [str(script), *argv]
    argparse.ArgumentParser.parse_args = parse_only
    try:
        runpy.run_path(str(script), run_name="__main__")
    except Parsed:
        return
    finally:
        argparse.ArgumentParser.parse_args = original
        sys.argv = old_argv
    raise AssertionError(f"{script} ran to the end without parsing arguments")


def check_command(words: list[str]) -> None:
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):  # VAR=value prefixes
        words = words[1:]
    program, args = Path(words[0]).name, words[1:]
    for arg in args:
        if arg.startswith(REPO_PATHS) and "*" not in arg:  # tests/x.py::name names tests/x.py
            assert (REPO / arg.split("::")[0]).exists(), f"{arg} does not exist"
    if program == "switchyard":
        try:
            build_parser().parse_args(args)
        except SystemExit as err:
            raise AssertionError(f"`switchyard {shlex.join(args)}` does not parse") from err
    elif program.startswith("python") and args and args[0].endswith(".py"):
        assert (REPO / args[0]).is_file(), f"{args[0]} does not exist"
        try:
            parse_script(REPO / args[0], args[1:])
        except SystemExit as err:
            raise AssertionError(f"`{shlex.join(args)}` does not parse") from err
    elif program in ("bash", "sh") or (program == "serve" and args[:1] in (["run"], ["deploy"])):
        path = args[0] if program != "serve" else args[1]
        assert (REPO / path).is_file(), f"{path} does not exist"


@pytest.mark.parametrize("where,words", all_commands(), ids=[w for w, _ in all_commands()])
def test_runnable_commands_parse(where, words, capsys):
    check_command(words)


def test_the_pages_have_commands_and_the_readme_the_ci_test_command():
    found = {page.name for page in PAGES if bash_commands(page)}
    assert {"README.md", "serving.md", "affinity.md", "performance.md"} <= found
    readme = (REPO / "README.md").read_text()
    assert ("python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
            in readme)  # .ci/run runs this line word for word
    assert len(readme.splitlines()) <= 220


def github_anchor(heading: str) -> str:
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    return {github_anchor(m) for m in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def links() -> list[tuple[Path, str]]:
    out = []
    for page in PAGES:
        text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
        out += [(page, target) for target in LINK.findall(text) if not re.match(r"^[a-z]+:", target)]
    return out


@pytest.mark.parametrize("page,target", links(), ids=[f"{p.name}->{t}" for p, t in links()])
def test_relative_links_resolve(page, target):
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    assert resolved.exists(), f"{page.name}: {target}: no such file"
    if anchor and resolved.suffix == ".md":
        assert anchor in anchors(resolved), f"{page.name}: {target}: no heading with that anchor"
