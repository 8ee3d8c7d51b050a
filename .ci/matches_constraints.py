"""Exits 0 when the installed versions are exactly a constraints file's.

    python3 .ci/matches_constraints.py constraints.txt

Prints each package whose installed version differs (or that is missing),
so that CI's log says why it runs the tests a second time.
"""

import importlib.metadata
import sys


def mismatches(path):
    """``[(package, pinned, installed or None)]`` that differ from ``path``."""
    found = []
    for line in open(path, encoding="utf-8"):
        line = line.split("#", 1)[0].strip()
        if "==" not in line:
            continue
        name, pinned = (part.strip() for part in line.split("==", 1))
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != pinned:
            found.append((name, pinned, installed))
    return found


if __name__ == "__main__":
    differ = mismatches(sys.argv[1])
    for name, pinned, installed in differ:
        print(f"{name}: pinned {pinned}, installed {installed}")
    sys.exit(1 if differ else 0)
