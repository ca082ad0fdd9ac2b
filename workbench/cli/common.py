"""cli.common."""
from __future__ import annotations

import argparse


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _ints(s: str) -> list[int]:
    try:
        return [int(x) for x in _csv(s)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}")


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]
