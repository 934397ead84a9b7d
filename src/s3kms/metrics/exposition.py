"""The Prometheus text exposition format, version 0.0.4: families of samples as bytes.

    # HELP s3kms_requests_total Requests answered, ...
    # TYPE s3kms_requests_total counter
    s3kms_requests_total{surface="aws",operation="Decrypt",outcome="ok",status="200"} 1027

Label values escape `\\`, `"` and newlines; help texts escape `\\` and newlines; values are
integers where they are whole, else Python's shortest repr, and `+Inf`, `-Inf`, `NaN`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[str, tuple[tuple[str, str], ...], float]  # name, labels, value
Family = tuple[str, str, str, Sequence[Sample]]  # name, type, help, samples


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def render(families: Iterable[Family]) -> bytes:
    """`(name, type, help, samples)` for each family, in order, as one exposition."""
    lines: list[str] = []
    for name, kind, text, samples in families:
        lines.append(f"# HELP {name} {_help(text)}")
        lines.append(f"# TYPE {name} {kind}")
        for sample_name, labels, value in samples:
            if labels:
                inner = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels)
                lines.append(f"{sample_name}{{{inner}}} {number(value)}")
            else:
                lines.append(f"{sample_name} {number(value)}")
    lines.append("")
    return "\n".join(lines).encode()
