"""`announcer` with some of the daemon's timing constants changed (bench only: `tune --burst` compares them).

Usage (as an ExaBGP run line): python bench/announcer_variant.py DEFER_LIMIT=0 BURST_LIMIT=0.1 run --config FILE
(NICE=5: the announcer lowers its own priority by 5 below ExaBGP's, which it inherits.)
"""

from __future__ import annotations

import os
import sys

import announcer.daemon
from announcer.cli import main

CHANGEABLE = {"DEFER_LIMIT", "DEFER_IN_FLIGHT", "BURST_LIMIT", "NICE"}


def apply(arguments: list[str]) -> list[str]:
    """Set each leading NAME=VALUE on announcer.daemon; the rest of the arguments."""
    while arguments and "=" in arguments[0] and arguments[0].split("=", 1)[0] in CHANGEABLE:
        name, value = arguments.pop(0).split("=", 1)
        if name == "NICE":
            os.nice(int(value))
            continue
        setattr(announcer.daemon, name, int(value) if name == "DEFER_IN_FLIGHT" else float(value))
        if name == "BURST_LIMIT":  # bound as _gather's default when the module was imported
            announcer.daemon._gather.__defaults__ = (float(value),)
    return arguments


if __name__ == "__main__":
    sys.argv[1:] = apply(sys.argv[1:])
    sys.exit(main())
