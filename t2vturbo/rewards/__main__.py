"""``python -m t2vturbo.rewards list``: every registered reward, its kind and the weights it expects."""

from __future__ import annotations

import argparse
import sys

from ..cli import prog
from .registry import available, import_errors


def _list() -> int:
    rewards = available()
    width = max([len(n) for n in rewards] + [4])
    print(f"{'name':<{width}}  {'kind':<5}  expects")
    for name, cls in rewards.items():
        print(f"{name:<{width}}  {cls.kind:<5}  {cls.expects}")
    for mod, err in sorted(import_errors().items()):
        print(f"warning: t2vturbo.rewards.{mod} failed to import: {err}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog("t2vturbo.rewards"), description=__doc__)
    parser.add_argument("command", nargs="?", default="list", choices=["list"])
    parser.parse_args(argv)
    return _list()


if __name__ == "__main__":
    sys.exit(main())
