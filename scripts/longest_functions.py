"""The longest functions of the given folders (default: objguided, methods), in lines from `def` to the end.

    python scripts/longest_functions.py [--most N] [--limit L] [folder ...]

Prints the N longest (default 10), longest first, and how many exceed L lines (default 80, the project's
limit); exits 1 when any does. Nested functions count on their own and inside their parent.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def function_lengths(folders: list[str]) -> list[tuple[int, str]]:
    rows = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    rows.append((node.end_lineno - node.lineno + 1, f"{path}:{node.lineno} {node.name}"))
    return sorted(rows, reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", default=["objguided", "methods"])
    parser.add_argument("--most", type=int, default=10)
    parser.add_argument("--limit", type=int, default=80)
    args = parser.parse_args(argv)
    rows = function_lengths(args.folders)
    for lines, where in rows[: args.most]:
        print(f"{lines:5d}  {where}")
    over = [r for r in rows if r[0] > args.limit]
    print(f"{len(over)} functions over {args.limit} lines")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
