"""The package's import graph, read with `ast` (nothing is imported): no cycles, the bottom
layers (settings, mail, store, log, the time budget) import nothing above them, no module
imports another package's `_private` names, and the scanners' rules, configuration and
state know nothing of the IMAP wire. `__import__("connector.x")` and
`importlib.import_module("connector.x")` count as imports: a hidden import is still one."""

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
            hidden = _hidden_import(node)
            if hidden:
                edges.add(hidden)
            elif isinstance(node, ast.Import):
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


def _hidden_import(node):
    """The module named by `__import__("...")` or `importlib.import_module("...")`, else None."""
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
        return None
    func = node.func
    if (isinstance(func, ast.Name) and func.id == "__import__") or \
            (isinstance(func, ast.Attribute) and func.attr == "import_module"):
        return node.args[0].value
    return None


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


def test_hidden_imports_are_seen():
    """`settings` once reached the scanners through `__import__` (a cycle the graph missed)."""
    tree = ast.parse('__import__("connector.scanners.config", fromlist=["x"])\nimportlib.import_module("a.b")')
    assert [_hidden_import(node) for node in ast.walk(tree) if _hidden_import(node)] == \
        ["connector.scanners.config", "a.b"]


def test_settings_knows_nothing_of_the_scanners():
    assert [t for t in _graph()["connector.settings.loader"] | _graph()["connector.settings"]
            if _within(t, "connector.scanners")] == []
    assert not (PACKAGE / "settings" / "plugins.py").exists()


def _package_of(name):
    parts = name.split(".")
    return ".".join(parts[:2])


def test_no_module_imports_another_packages_private_names():
    modules = _modules()
    found = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("connector.") \
                    and _package_of(node.module) != _package_of(name):
                found += [f"{name} imports {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert found == []


# The scanners' rules, configuration and conditions, and the store's scanner state: what a
# mailbox holds and what to do with it, not how IMAP says it (that is connector.intake.imap).
WIRE_FREE = ("connector.scanners.config", "connector.scanners.conditions", "connector.scanners.rules",
             "connector.scanners.schema", "connector.store.scanners")
WIRE = ("imapclient", "imaplib", "connector.intake")


def test_scanner_rules_and_state_know_nothing_of_the_imap_wire():
    modules, graph = _modules(), _graph()
    found = []
    for name in WIRE_FREE:
        for node in ast.walk(ast.parse(modules[name].read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{name} imports {n}" for n in names if any(_within(n, wire) for wire in WIRE)]
        seen, todo = set(), [name]  # nor through what they import
        while todo:
            for target in graph[todo.pop()] - seen:
                seen.add(target)
                todo.append(target)
        found += [f"{name} reaches {t}" for t in sorted(seen) if _within(t, "connector.intake")]
    assert found == []
