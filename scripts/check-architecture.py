#!/usr/bin/env python3
"""The module graph, checked: every module declares what it imports, and docs/ARCHITECTURE.md shows the
graph as Package.swift has it (the section between the `module-graph` markers is generated here).

    scripts/check-architecture.py            fail (exit 1) on an undeclared import or a stale graph
    scripts/check-architecture.py --write    regenerate the graph section of docs/ARCHITECTURE.md

Reads the package with `swift package dump-package` (no build). An import of a package module that the
importing target does not list among its dependencies builds only by accident (through another target)
and is reported, and so is a declared in-package dependency that no source imports. Standard library only;
ends with `architecture: N passed, F failed`.
"""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "ARCHITECTURE.md")
BEGIN, END = "<!-- module-graph: begin (scripts/check-architecture.py --write) -->", "<!-- module-graph: end -->"
IMPORT = re.compile(r"^\s*(?:@testable\s+|@_exported\s+|@_implementationOnly\s+)?import\s+(?:struct\s+|enum\s+|class\s+)?(\w+)", re.M)


def package():
    out = subprocess.run(["swift", "package", "dump-package"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def target_path(target):
    if target.get("path"):
        return os.path.join(ROOT, target["path"])
    kind = "Tests" if target["type"] == "test" else "Sources"
    return os.path.join(ROOT, kind, target["name"])


def dependency_names(target):
    names = []
    for dep in target["dependencies"]:
        for kind in ("byName", "target", "product"):
            if kind in dep:
                names.append(dep[kind][0])
    return names


def imports(folder):
    found = set()
    for base, _, files in os.walk(folder):
        for f in files:
            if f.endswith(".swift"):
                found |= set(IMPORT.findall(open(os.path.join(base, f), encoding="utf-8").read()))
    return found


def graph(targets):
    """Markdown: one row per library and executable target, in Package.swift order."""
    rows = ["| module | kind | depends on (in this package) |", "|---|---|---|"]
    for t in targets:
        if t["type"] == "test":
            continue
        kind = {"system": "C library (pkg-config)", "executable": "executable", "regular": "library"}.get(t["type"], t["type"])
        deps = [d for d in dependency_names(t) if d in {x["name"] for x in targets}]
        rows.append(f"| `{t['name']}` | {kind} | {', '.join(f'`{d}`' for d in deps) or '—'} |")
    return "\n".join(rows)


def main():
    write = "--write" in sys.argv[1:]
    pkg = package()
    targets = pkg["targets"]
    names = {t["name"] for t in targets}
    problems = []
    checked = 0
    for t in targets:
        if t["type"] == "system":
            continue
        declared = set(dependency_names(t))
        used = imports(target_path(t)) & names
        checked += 1
        for module in sorted(used - declared - {t["name"]}):
            problems.append(f"{t['name']} imports {module} without declaring it in Package.swift")
        for module in sorted((declared & names) - used):
            # Test targets may depend on a module only to have it built (the executables they run).
            if t["type"] != "test" and not any(x["name"] == module and x["type"] == "executable" for x in targets):
                problems.append(f"{t['name']} declares {module} but imports nothing from it")
    section = f"{BEGIN}\n{graph(targets)}\n{END}"
    doc = open(DOC, encoding="utf-8").read() if os.path.exists(DOC) else ""
    current = re.search(re.escape(BEGIN) + r".*?" + re.escape(END), doc, re.S)
    if write:
        doc = doc.replace(current.group(0), section) if current else doc + "\n" + section + "\n"
        open(DOC, "w", encoding="utf-8").write(doc)
    elif not current or current.group(0) != section:
        problems.append("docs/ARCHITECTURE.md: the module graph differs from Package.swift (scripts/check-architecture.py --write)")
    for p in problems:
        print("FAIL " + p)
    print(f"architecture: {max(0, checked + 1 - len(problems))} passed, {len(problems)} failed")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
