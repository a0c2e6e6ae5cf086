"""The package's import graph, read with `ast` (nothing is imported): no cycles, and the
bottom layers (settings, mail, store, log, the time budget) import nothing above them."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "connector"
BOTTOM = ("connector.settings", "connector.mail", "connector.store", "connector.log", "connector.timebudget")


def _modules():
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _graph():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    edges.add(target if target in modules else base)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def _within(name, layer):
    return name == layer or name.startswith(layer + ".")


def test_no_import_cycle():
    graph = _graph()
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_bottom_layers_import_nothing_above_them():
    upward = [f"{name} imports {target}" for name, targets in _graph().items()
              if any(_within(name, layer) for layer in BOTTOM)
              for target in targets
              if target != "connector" and not any(_within(target, layer) for layer in BOTTOM)]
    assert upward == []
