"""The compiled hot path (hatch_build.py): what a wheel install runs is the extension of every
module the hook lists, and the start line and `compiled.hot_path()` say so."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import json
import os
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from s3kms import compiled

ROOT = Path(__file__).resolve().parents[1]


def listed() -> list[str]:
    """hatch_build.COMPILED, read from the file (hatchling is a build dependency only)."""
    tree = ast.parse((ROOT / "hatch_build.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "COMPILED":
            value = ast.literal_eval(node.value)
            assert isinstance(value, tuple)
            return [str(v) for v in value]
    raise AssertionError("hatch_build.py has no COMPILED")


def test_every_listed_module_exists() -> None:
    modules = listed()
    assert "s3kms/auth/sigv4.py" in modules  # what compiled.hot_path() looks at
    for relative in modules:
        assert (ROOT / "src" / relative).is_file(), relative


def test_a_wheel_runs_the_listed_modules_compiled() -> None:
    direct = json.loads(
        importlib.metadata.distribution("s3kms").read_text("direct_url.json") or "{}"
    )
    if direct.get("dir_info", {}).get("editable"):
        assert compiled.hot_path() == "interpreted"
        pytest.skip("an editable install runs src/, interpreted")
    if os.environ.get("S3KMS_PURE_PYTHON"):
        pytest.skip("S3KMS_PURE_PYTHON is set: the install may have skipped compiling")
    for relative in listed():
        module = importlib.import_module(relative.removesuffix(".py").replace("/", "."))
        assert module.__file__ is not None and module.__file__.endswith(
            tuple(EXTENSION_SUFFIXES)
        ), module.__file__
    assert compiled.hot_path() == "compiled"
