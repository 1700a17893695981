#!/usr/bin/env python3
"""Finds import cycles between the modules of each workspace crate.

A module is a file (`src/a.rs`, `src/a/mod.rs`, `src/a/b.rs`). Module A depends on module B when
A's code names a path into B (`use crate::b::X`, `super::X`, `crate::b::f()`, `child::f()`,
grouped `use` trees included); a path is charged to the deepest module it names. Declaring a child (`mod b;`)
is not a use, and `#[cfg(test)] mod tests` blocks are left out (tests may use anything).

This is the check `cargo modules dependencies --acyclic` makes, in a form that needs no
rust-analyzer build on CI. Exits 1 and prints every cycle found.

Usage: scripts/module_cycles.py CRATE_DIR...
"""

import re
import sys
from pathlib import Path

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
# A path from a child module in scope: `receipts::report(..)` inside `api`.
BARE = re.compile(r"(?<![:\w])([a-z_][a-z0-9_]*)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE = re.compile(r"\buse\s+((?:crate|super|self)\s*::[^;]*);", re.S)
TESTS = re.compile(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*mod\s+\w+\s*\{")
COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
STRING = re.compile(r'r#*"(?:.|\n)*?"#*|"(?:\\.|[^"\\])*"')


def module_files(src: Path):
    """Maps each module path (a tuple of names, () for the crate root) to its file."""
    mods = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src).with_suffix("").parts
        if rel in (("lib",), ("main",)):
            key = ()
        elif rel[-1] == "mod":
            key = rel[:-1]
        else:
            key = rel
        if key == () and () in mods and rel == ("main",):
            continue  # a library's binary: the library root wins
        if len(rel) > 1 and rel[0] == "bin":
            continue
        if rel[-1] == "tests" or rel[-1].endswith("_tests"):
            continue  # test modules kept in their own files (`#[path = "db_tests.rs"]`)
        mods[key] = f
    return mods


def strip(text: str) -> str:
    """The code without comments, string literals and test modules."""
    text = COMMENT.sub(" ", text)
    text = STRING.sub('""', text)
    m = TESTS.search(text)
    while m:
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        text = text[: m.start()] + text[i:]
        m = TESTS.search(text)
    return text


def expand(tree: str):
    """The paths of a `use` tree: `crate::a::{b, c::{d, e}}` -> crate::a::b, crate::a::c::d, ..."""
    tree = re.sub(r"\s+", "", tree)
    if "{" not in tree:
        yield tree.split(" as ")[0]
        return
    head, rest = tree.split("{", 1)
    body = rest[: rest.rindex("}")]
    depth, start = 0, 0
    parts = []
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    for p in parts:
        if p:
            yield from expand(head + p)


def resolve(module, path, mods):
    """The module a path names from `module`, or None when it leaves the crate."""
    segs = path.split("::")
    base = list(module)
    if segs[0] == "crate":
        base = []
    elif segs[0] == "super":
        while segs and segs[0] == "super":
            if not base:
                return None
            base.pop()
            segs = segs[1:]
        segs = ["super"] + segs
    elif segs[0] != "self":
        return None
    target = tuple(base)
    for s in segs[1:]:
        if s in ("self", "*"):
            break
        if target + (s,) in mods:
            target = target + (s,)
        else:
            break
    return target


def cycles(edges):
    """Every strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def name(m):
    return "crate" + "".join("::" + s for s in m)


def check(crate: Path) -> int:
    mods = module_files(crate / "src")
    edges = {m: set() for m in mods}
    why = {}
    for m, f in mods.items():
        code = strip(f.read_text())
        paths = [p for u in USE.findall(code) for p in expand(u)]
        paths += [a + b for a, b in PATH.findall(code)]
        paths += ["self::" + a + b for a, b in BARE.findall(code) if m + (a,) in mods]
        for p in paths:
            t = resolve(m, p, mods)
            if t is not None and t != m:
                edges[m].add(t)
                why.setdefault((m, t), p)
    found = cycles(edges)
    for comp in found:
        print(f"{crate.name}: import cycle between {', '.join(name(c) for c in comp)}:")
        members = set(comp)
        for a in comp:
            for b in sorted(edges[a] & members):
                print(f"    {name(a)} uses {why[(a, b)]}")
    return len(found)


def main():
    dirs = [Path(d) for d in sys.argv[1:]]
    if not dirs:
        print(__doc__, file=sys.stderr)
        return 2
    found = sum(check(d) for d in dirs)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
