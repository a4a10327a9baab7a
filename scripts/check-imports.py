#!/usr/bin/env python3
"""Fails when two files under src/ import each other (docs/architecture.md, "No import circles").

A file's imports are the `crate::`, `super::` and `self::` paths it names (in `use` lines, brace
groups included, and inline) and the paths into its own child modules, each resolved to the
longest module path that is a file. Comments are ignored. A module and its own descendants are
one unit (a child sees its parent's private items, and a parent re-exports its children), so the
pairs along one line of the module tree are counted and printed but do not fail; any other pair
does. Exit status 1 lists the failing pairs.
"""
import glob
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def modules():
    """Module path (a tuple of names) -> file."""
    found = {}
    for path in glob.glob(str(SRC / "**" / "*.rs"), recursive=True):
        parts = list(Path(path).relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "mod":
            parts = parts[:-1]
        if parts in (["lib"], ["main"]):
            parts = []
        found[tuple(parts)] = Path(path)
    return found


def resolve(mods, here, path):
    parts = path.split("::")
    base = list(here)
    if parts[0] == "crate":
        base, parts = [], parts[1:]
    elif parts[0] == "super":
        while parts and parts[0] == "super":
            base, parts = base[:-1], parts[1:]
    elif parts[0] == "self":
        parts = parts[1:]
    full = base + parts
    for k in range(len(full), -1, -1):
        if tuple(full[:k]) in mods:
            return tuple(full[:k])
    return None


def imports(mods, here, text):
    text = re.sub(r"//.*", "", text)
    paths = set(re.findall(r"\b((?:crate|super|self)(?:::\w+)+)", text))
    # A child module named without `self::` (`use child::Item`, `pub use child::{..}`).
    for path in re.findall(r"\buse\s+(\w+(?:::\w+)*)", text):
        if tuple(list(here) + [path.split("::")[0]]) in mods:
            paths.add("self::" + path)
    for prefix, group in re.findall(r"\buse\s+((?:crate|super|self)(?:::\w+)*)::\{([^;]*)\}", text, re.S):
        paths.update(prefix + "::" + item for item in re.findall(r"\w+(?:::\w+)*", group))
    targets = {resolve(mods, here, p) for p in paths}
    return {t for t in targets if t is not None and t != here}


def main():
    mods = modules()
    edges = {m: imports(mods, m, f.read_text()) for m, f in mods.items()}
    mutual = sorted(
        (a, b) for a in edges for b in edges[a] if a < b and a in edges.get(b, ())
    )
    def name(m):
        return str(mods[m].relative_to(SRC.parent))
    def one_line(a, b):
        return a[: len(b)] == b or b[: len(a)] == a
    failing = [(a, b) for a, b in mutual if not one_line(a, b)]
    for a, b in failing:
        print(f"{name(a)} and {name(b)} import each other")
    print(
        f"{len(mods)} files: {len(failing)} pairs importing each other, "
        f"{len(mutual) - len(failing)} more between a module and its own descendant"
    )
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
