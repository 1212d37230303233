"""What the install holds: every folder of code is a package that setup.py's discovery finds."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_folder_of_code_is_a_package():
    """find_packages only sees folders with an __init__.py: one without would be left out of a wheel."""
    missing = [str(folder.relative_to(REPO)) for top in ("configs", "cluster", "router", "experts")
               for folder in [REPO / top, *(REPO / top).rglob("*")]
               if folder.is_dir() and "__pycache__" not in folder.parts and any(folder.glob("*.py"))
               and not (folder / "__init__.py").exists()]
    assert missing == []


def test_engine_packages_never_import_the_cluster():
    """router/ and experts/ run without Ray: nothing in them imports switchyard.cluster."""
    offenders = [f"{path.relative_to(REPO)}:{number}" for top in ("router", "experts")
                 for path in (REPO / top).rglob("*.py")
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if "switchyard.cluster" in line and line.lstrip().startswith(("import ", "from "))]
    assert offenders == []
