"""The package's import graph, read with `ast` (nothing is imported): no cycles, no hidden
imports (`__import__`, `importlib`), commands on top with nothing below importing them, the
bottom layers (settings, mail, store, log, the time budget) importing nothing above them,
exceptions matched by type, never by name, no module importing another package's
`_private` names, and the scanners' rules, configuration and state knowing nothing of
the IMAP wire."""

import ast
from pathlib import Path


PACKAGE = Path(__file__).resolve().parent.parent / "connector"
BOTTOM = ("connector.settings", "connector.mail", "connector.store", "connector.log", "connector.timebudget")
TOP = ("connector.commands", "connector.cli", "connector.__main__")  # may import connector.commands
HIDDEN = ("__import__", "import_module")
# The scanners' line of work removes this module's `__import__` (and with it the cycle
# scanners/config.py -> settings/loader.py -> settings/plugins.py): until it is merged,
# only the xfail test below looks at it.


def _modules():
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _trees():
    return {name: ast.parse(path.read_text()) for name, path in _modules().items()}


def _hidden_imports(tree):
    """Module names passed as a literal to `__import__(...)` or `importlib.import_module(...)`,
    and whether `importlib` is imported at all."""
    names, uses = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if called in HIDDEN:
                uses.append(f"line {node.lineno}: {called}()")
                if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                    names.add(node.args[0].value)
        elif isinstance(node, ast.Import) and any(a.name == "importlib" for a in node.names):
            uses.append(f"line {node.lineno}: import importlib")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("importlib"):
            uses.append(f"line {node.lineno}: from importlib import ...")
    return names, uses


def _graph(skip_hidden_of=()):
    """module -> modules it imports, hidden imports included (except those of `skip_hidden_of`)."""
    modules = _modules()
    graph = {}
    for name, tree in _trees().items():
        path = modules[name]
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(tree):
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
        if name not in skip_hidden_of:
            edges |= _hidden_imports(tree)[0]
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def _within(name, layer):
    return name == layer or name.startswith(layer + ".")


def _cycles(graph):
    found, state, path = [], {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def _upward(graph):
    return [f"{name} imports {target}" for name, targets in graph.items()
            if any(_within(name, layer) for layer in BOTTOM)
            for target in targets
            if target != "connector" and not any(_within(target, layer) for layer in BOTTOM)]


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_bottom_layers_import_nothing_above_them():
    assert _upward(_graph()) == []


def test_nothing_below_the_commands_imports_them():
    below = [f"{name} imports {target}" for name, targets in _graph().items()
             if not any(_within(name, top) for top in TOP)
             for target in targets if _within(target, "connector.commands")]
    assert below == []


def test_no_hidden_imports():
    """Wiring is written out as imports a reader (and this test) can follow."""
    hidden = {name: uses for name, tree in _trees().items()
              for uses in [_hidden_imports(tree)[1]] if uses}
    assert hidden == {}


def _names_an_exception_type(node):
    """`type(x).__name__` or `x.__class__.__name__`."""
    if not (isinstance(node, ast.Attribute) and node.attr == "__name__"):
        return False
    inner = node.value
    return (isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name) and inner.func.id == "type") \
        or (isinstance(inner, ast.Attribute) and inner.attr == "__class__")


def test_exceptions_are_matched_by_type_never_by_name():
    """A comparison with a type's name breaks silently when the class is renamed; use isinstance."""
    by_name = [f"{name} line {node.lineno}" for name, tree in _trees().items()
               for node in ast.walk(tree) if isinstance(node, ast.Compare)
               and any(_names_an_exception_type(side) for side in [node.left, *node.comparators])]
    assert by_name == []


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
