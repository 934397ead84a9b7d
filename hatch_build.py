"""Build hook: compile the request hot path with mypyc into every standard wheel.

`pip install .` (and any wheel build) compiles the modules in `COMPILED` to C extensions with
mypyc, from the same typed source mypy --strict checks; the `.py` files ship beside them and are
what Python runs where an extension is missing. A GenerateDataKey costs about 20 % fewer
instructions compiled (benchmarks/README.md, *The compiled hot path*).

Not compiled:
- an editable install (`pip install -e .`): Python runs the source tree as it is edited, where
  an extension built from an earlier version of a file would shadow it;
- with `S3KMS_PURE_PYTHON=1` set at install time (a machine without a C compiler).

A module belongs in `COMPILED` when requests run through it and nothing changes it at run time:
mypyc binds calls inside compiled code at build time, so a test cannot patch a compiled function
or method, and interpreted code cannot subclass a compiled class.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

COMPILED = (
    "s3kms/request.py",
    "s3kms/service.py",
    "s3kms/auth/sigv4.py",
    "s3kms/auth/identity.py",
    "s3kms/http/app.py",
    "s3kms/http/responses.py",
    "s3kms/http/jsonbody.py",
    "s3kms/crypto/aead.py",
    "s3kms/crypto/blob.py",
    "s3kms/protocols/awskms/api.py",
    "s3kms/protocols/awskms/crypto.py",
    "s3kms/protocols/awskms/handler.py",
    "s3kms/protocols/awskms/members.py",
    "s3kms/metrics/registry.py",
    "s3kms/access/conditions.py",
    "s3kms/access/glob.py",
)


class CompileHotPath(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        self._work: str | None = None
        if version != "standard" or os.environ.get("S3KMS_PURE_PYTHON"):
            return
        # In a copy: mypyc writes its C files, objects and extensions beside the sources.
        work = self._work = tempfile.mkdtemp(prefix="s3kms-mypyc-")
        shutil.copytree(Path(self.root) / "src" / "s3kms", Path(work) / "s3kms")
        cmd = [sys.executable, "-m", "mypyc", "--ignore-missing-imports", *COMPILED]
        done = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                "mypyc could not compile s3kms's hot path (set S3KMS_PURE_PYTHON=1 to install "
                f"without compiling):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
            )
        for ext in Path(work).glob("**/*.so"):
            relative = ext.relative_to(work)
            if relative.parts[0] == "build":
                continue  # setuptools' copies
            build_data["force_include"][str(ext)] = str(relative)
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
