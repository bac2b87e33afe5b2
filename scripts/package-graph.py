#!/usr/bin/env python3
"""What a build outside SwiftPM (the fuzz build) needs, derived from Package.swift instead of a second copy
of the module graph: for the modules that the given Swift files import, every library module they depend on
(transitively, in build order), the system libraries among them with their pkg-config names, and the
resources to embed.

    scripts/package-graph.py FILE.swift ...

Prints one line per item: `language MODE` (the package's Swift language mode, for files outside its targets),
`module NAME MODE` (MODE: the module's Swift language mode), `system NAME PKGCONFIG`, `resource NAME FILE`
(FILE relative to the repository). Standard library only; reads the package with `swift package dump-package`.
"""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMPORT = re.compile(r"^\s*(?:@testable\s+|@_exported\s+)?import\s+(\w+)", re.M)


def main():
    package = json.loads(subprocess.run(["swift", "package", "dump-package"], cwd=ROOT, check=True,
                                        capture_output=True, text=True).stdout)
    targets = {t["name"]: t for t in package["targets"]}

    # The package's mode: the newest of swiftLanguageModes (dumped as ["6"]), else the tools version's (6).
    modes = package.get("swiftLanguageModes") or package.get("swiftLanguageVersions") or ["6"]
    package_mode = max(modes, key=lambda m: [int(p) for p in m.split(".")])

    def language_mode(target):  # a target's .swiftLanguageMode(...) setting (dumped as {"_0": "5"}), else the package's
        for setting in target.get("settings", []):
            if setting.get("tool") == "swift" and "swiftLanguageMode" in setting.get("kind", {}):
                return setting["kind"]["swiftLanguageMode"]["_0"]
        return package_mode

    def dependencies(name):
        out = []
        for dep in targets[name]["dependencies"]:
            for kind in ("byName", "target"):
                if kind in dep and dep[kind][0] in targets:
                    out.append(dep[kind][0])
        return out

    roots = set()
    for path in sys.argv[1:]:
        roots |= {m for m in IMPORT.findall(open(path, encoding="utf-8").read()) if m in targets}
    order, seen = [], set()

    def visit(name):  # depth first: a module after everything it depends on
        if name in seen:
            return
        seen.add(name)
        for dep in dependencies(name):
            visit(dep)
        order.append(name)

    for name in sorted(roots):
        visit(name)
    print(f"language {package_mode}")
    for name in order:
        t = targets[name]
        if t["type"] == "system":
            print(f"system {name} {t.get('pkgConfig') or ''}".rstrip())
        else:
            print(f"module {name} {language_mode(t)}")
            for resource in t.get("resources", []):
                print(f"resource {name} {os.path.join('Sources', name, resource['path'])}")


if __name__ == "__main__":
    main()
