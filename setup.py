"""Packages are discovered, not listed: each top-level folder of code is a subpackage of `switchyard`
(`cluster/` is `switchyard.cluster`), and every folder under it with an `__init__.py` comes along, so a new
folder cannot be left out of the install. `switchyard` itself is the folder `switchyard/`, which holds only its
`__init__.py` (the Python API's names). The rest of the metadata is in pyproject.toml."""

from setuptools import find_packages, setup

TOP_LEVEL = ("configs", "cluster", "router", "experts")

setup(
    packages=["switchyard"] + [f"switchyard.{name}" for name in find_packages(include=[f"{top}*" for top in TOP_LEVEL])],
    package_dir={"switchyard": "switchyard", **{f"switchyard.{top}": top for top in TOP_LEVEL}},
)
