"""Structure limits of bench/ and methods/, run by .ci/run.

- no module over 400 lines;
- no function over 60 lines (decorators and docstring included);
- no import cycle between modules (imports inside functions count; ``TYPE_CHECKING`` blocks do not);
- no import of a private name (``_x``) from another module.

Prints each violation on one line and exits 1 if there is any.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
ROOTS = ("bench", "methods")


def module_name(path: Path) -> str:
    """``bench/run/cell.py`` -> ``bench.run.cell``; a package's ``__init__`` is the package."""
    parts = list(path.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(path: Path, tree: ast.Module, known: set[str]) -> list[tuple[str, str, int]]:
    """(imported module, imported name or "", line) of every runtime import of our own modules."""
    guarded = _type_checking_lines(tree)
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if node.lineno in guarded if isinstance(node, (ast.Import, ast.ImportFrom)) else True:
            continue
        if isinstance(node, ast.Import):
            out += [(alias.name, "", node.lineno) for alias in node.names if alias.name in known]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    out.append((sub, "", node.lineno))
                elif base in known:
                    out.append((base, alias.name, node.lineno))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def check(root: Path) -> list[str]:
    """Every violation under ``root``'s bench/ and methods/, one line each."""
    files = sorted(p.relative_to(root) for r in ROOTS for p in (root / r).rglob("*.py"))
    known = {module_name(p) for p in files}
    problems, graph = [], {}
    for path in files:
        text = (root / path).read_text(encoding="utf-8")
        n_lines = len(text.splitlines())
        if n_lines > MAX_MODULE_LINES:
            problems.append(f"{path}: {n_lines} lines (limit {MAX_MODULE_LINES})")
        tree = ast.parse(text, str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = (node.end_lineno or node.lineno) - start + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(f"{path}:{node.lineno}: function {node.name} has {length} lines "
                                    f"(limit {MAX_FUNCTION_LINES})")
        me = module_name(path)
        graph[me] = set()
        for target, name, line in imports(path, tree, known):
            if target != me and not me.startswith(target + "."):  # a package's own __init__ is not a cycle
                graph[me].add(target)
            if name.startswith("_") and not name.startswith("__"):
                problems.append(f"{path}:{line}: imports private name {name} from {target}")
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems


def main() -> int:
    """Check this repository; print violations; 1 if any."""
    problems = check(Path(__file__).resolve().parents[1])
    for problem in problems:
        print(problem)
    print(f"structure: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
