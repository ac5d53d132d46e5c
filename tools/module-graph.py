#!/usr/bin/env python3
"""Prints the module graph of the issuer crate (`src/`) from its `crate::`
paths (code and doc links alike) and fails if it has a cycle.

Usage: python3 tools/module-graph.py [src]
"""

import os
import re
import sys


def top_module(src, path):
    parts = os.path.relpath(path, src)[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts[0] if parts else "lib"


def graph(src):
    edges = {}
    for root, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            module = top_module(src, path)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            deps = edges.setdefault(module, set())
            for dep in re.findall(r"crate::([a-z_][a-z0-9_]*)", text):
                if dep != module:
                    deps.add(dep)
    return edges


def cycles(edges):
    found, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    return found


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    edges = graph(src)
    for module in sorted(edges):
        print(f"{module} -> {' '.join(sorted(edges[module])) or '-'}")
    found = cycles(edges)
    for cycle in found:
        print("cycle: " + " -> ".join(cycle), file=sys.stderr)
    if found:
        sys.exit(1)
    print("no cycle")


if __name__ == "__main__":
    main()
