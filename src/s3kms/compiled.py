"""Whether this installation runs its hot path compiled (hatch_build.py) or as Python source.

A wheel (`pip install .`) carries the request path's modules compiled by mypyc; an editable
install, or one made with S3KMS_PURE_PYTHON=1, runs them from their `.py` files. The start line
says which (server.start_summary), and so do the benchmarks' results."""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES

from s3kms.auth import sigv4  # compiled whenever any module is: hatch_build.COMPILED


def hot_path() -> str:
    """`compiled` or `interpreted`."""
    return "compiled" if sigv4.__file__.endswith(tuple(EXTENSION_SUFFIXES)) else "interpreted"
