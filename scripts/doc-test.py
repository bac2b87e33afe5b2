#!/usr/bin/env python3
"""Docs that run: every command example in README.md and docs/*.md is executed (or, where it needs files
a user brings, checked for parsing), and the output lines the docs quote are compared with what the
command prints.

    scripts/doc-test.py [--bin DIR] [FILE.md ...]        (default: README.md docs/*.md; DIR from scripts/build.sh)

How a document marks its examples (an HTML comment on the line before the fence, invisible when rendered):

    <!-- doctest: run -->      run every command; each must exit 0 unless its comment says `exit N`
    <!-- doctest: parse -->    toolkit commands run with PPFLOW_PARSE_ONLY=1: arguments parsed and validated,
                               nothing loaded (for examples that need an XL checkpoint, a GPU, hours)
    <!-- doctest: skip WHY --> not run (another tool's command, such as torchrun)

Every ```sh and ```console block must carry a marker, so no example escapes the test by accident; synopses
go in ```text blocks. In a ```console block, lines starting with `$ ` are commands and the lines after one
are the output it must print: each quoted line must appear among the lines of stdout and stderr (each
matching a line of its own; the order is not compared, as the two streams interleave by timing); `...` inside a
line matches any text there, and a line that is only `...` skips any lines.
Commands of one file run in order in one scratch folder that links the repository's examples/, recipes/,
converters/, scripts/ and Tests/, with the binaries on PATH and in $B (a line assigning B is skipped).
Standard library only; ends with `doc examples: N passed, F failed`.
"""
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = re.compile(r"<!--\s*doctest:\s*(run|parse|skip)\b(.*?)-->")
FENCE = re.compile(r"^```(\w*)\s*$")
TOOLS = ("ppconvert", "ppsample", "ppfinetune")
LINKED = ("examples", "recipes", "converters", "scripts", "Tests", "docs")


def blocks(path):
    """(line number, language, marker, [lines]) for every fenced block."""
    lines = open(path, encoding="utf-8").read().split("\n")
    i, out = 0, []
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1), i
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        prev = lines[start - 1] if start > 0 else ""
        mark = MARKER.search(prev)
        out.append((start + 1, lang, (mark.group(1), mark.group(2).strip()) if mark else None, lines[start + 1:j]))
        i = j + 1
    return out


def commands(lang, body):
    """[(command, expected exit, [expected output lines])], with `\\` continuations joined."""
    result = []  # [command, [expected lines]]
    continuing = False
    for raw in body:
        line = raw.rstrip()
        if continuing:
            result[-1][0] += " " + line.rstrip("\\").strip()
            continuing = line.endswith("\\")
        elif lang == "console" and line.startswith("$ "):
            result.append([line[2:].rstrip("\\"), []])
            continuing = line.endswith("\\")
        elif lang == "console":
            if result:
                result[-1][1].append(raw)
        elif line.strip() and not line.lstrip().startswith("#"):
            result.append([line.rstrip("\\"), []])
            continuing = line.endswith("\\")
    out = []
    for command, expected in result:
        m = re.search(r"#.*\bexit (\d+)\b", command)
        while expected and not expected[-1].strip():
            expected.pop()
        out.append((command, int(m.group(1)) if m else 0, expected))
    return out


def matches(expected, actual):
    """Each quoted line matches a line of its own among the printed ones (`...` as in the module doc).
    Order is not compared: progress and errors go to stderr and results to stdout, and how the two
    interleave depends on timing, not on the command."""
    free = [line.rstrip() for line in actual]
    for want in expected:
        if want.strip() == "...":
            continue
        pattern = re.compile(".*".join(re.escape(part) for part in want.rstrip().split("...")))
        hit = next((k for k, line in enumerate(free) if line is not None and pattern.fullmatch(line)), None)
        if hit is None:
            return f"expected line not printed: {want!r}"
        free[hit] = None
    return None


def first_word_tool(command):
    words = command.split()
    for w in words:
        if "=" in w and not w.startswith("-"):
            continue  # VAR=value prefixes
        base = os.path.basename(w.replace("$B/", ""))
        return base if base in TOOLS else None
    return None


def main():
    args = sys.argv[1:]
    bin_dir = None
    if args[:1] == ["--bin"]:
        bin_dir, args = args[1], args[2:]
    if bin_dir is None:
        bin_dir = subprocess.run([os.path.join(ROOT, "scripts", "build.sh")], check=True, capture_output=True,
                                 text=True).stdout.strip().split("\n")[-1]
    files = args or ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))
    passed = failed = 0
    for rel in files:
        path = os.path.join(ROOT, rel)
        scratch = tempfile.mkdtemp(prefix="ppflow-doctest-")
        for name in LINKED:
            os.symlink(os.path.join(ROOT, name), os.path.join(scratch, name))
        env = dict(os.environ, B=bin_dir, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
        for line, lang, marker, body in blocks(path):
            if lang not in ("sh", "console"):
                continue
            where = f"{rel}:{line}"
            if marker is None:
                print(f"FAIL {where}: a ```{lang} block without a <!-- doctest: run|parse|skip --> marker")
                failed += 1
                continue
            mode, why = marker
            if mode == "skip":
                print(f"skip {where}: {why}")
                continue
            for command, status, expected in commands(lang, body):
                if re.match(r"^\s*B=", command):
                    continue
                run_env = dict(env)
                if mode == "parse":
                    if first_word_tool(command) is None:
                        print(f"skip {where}: not a toolkit command: {command}")
                        continue
                    run_env["PPFLOW_PARSE_ONLY"] = "1"
                    status = 0
                shown = command if len(command) < 110 else command[:107] + "..."
                try:
                    # One stream, as a terminal shows it (stdout is line-buffered, so the order holds).
                    r = subprocess.run(["bash", "-c", command], cwd=scratch, env=run_env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, timeout=1800)
                    output = r.stdout.split("\n")
                    problem = None
                    if r.returncode != status:
                        problem = f"exit {r.returncode}, expected {status}: " + " | ".join(l for l in output if l.strip())[-600:]
                    elif expected:
                        problem = matches(expected, output)
                        if problem:
                            problem += "\n        printed:\n" + "\n".join("          " + l for l in output if l.strip())
                except subprocess.TimeoutExpired:
                    problem = "timed out"
                if problem:
                    print(f"FAIL {where} ({mode}): {shown}\n        {problem}")
                    failed += 1
                else:
                    print(f"ok   {where} ({mode}): {shown}")
                    passed += 1
        subprocess.run(["rm", "-rf", scratch])
    print(f"doc examples: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
