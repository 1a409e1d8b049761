"""The imports run one way (CONVENTIONS 19, docs/architecture.md): no circle of modules
within an app or between apps, a lower app never imports a higher one, and inside consults
each module imports only those of the layers below it.

The graph is read from the source with `ast`, function-level imports included (an import
inside a function is a dependency all the same), so nothing is imported to check it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ("facilities", "cloudpacs", "dicomnode", "consults", "billing")
# Who may import whom: an app may import the apps listed before it. dicomnode and consults
# both sit on the archive and neither knows the other (the receiver's stability clock names
# the consults task it publishes, the one documented exception: docs/architecture.md).
APP_BELOW = {
    "facilities": set(),
    "cloudpacs": {"facilities"},
    "dicomnode": {"facilities", "cloudpacs"},
    "consults": {"facilities", "cloudpacs"},
    "billing": {"facilities", "cloudpacs", "consults"},
}
# Circles known and still to break, each by its modules (none left: the receiver's
# handoff, which both its parent and its server need, lives in dicomnode.handoff).
KNOWN_CYCLES: list[list[str]] = []
# The project's URL root mounts every app's pages; it lives in cloudpacs but is above them all.
PROJECT_ROOT = {"cloudpacs.urls"}
# The layers of consults, lowest first; a module imports only modules of lower layers
# (and of its own layer where named in SAME_LAYER).
CONSULTS_LAYERS = [
    {"template_library"},
    {"models"},
    {"rules", "verification", "outbox", "handoff", "changes"},
    {"pdf", "forms", "status", "report_texts"},
    {"services", "workflow"},
    {"delivery", "notifications"},
    {"tasks"},
    {"views", "admin", "management"},
    {"urls", "apps"},
]


def modules() -> Iterator[tuple[str, Path]]:
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            relative = path.relative_to(ROOT).with_suffix("")
            if "migrations" in relative.parts:
                continue
            parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
            yield ".".join(parts), path


def imported(path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            # The longest known module the name starts with: `consults.models.Consult` is consults.models.
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name.split(".")[0] in APPS:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    paths = dict(modules())
    known = set(paths)
    edges = {name: imported(path, known) - {name} for name, path in paths.items()}
    # A package's __init__ imported for its submodule (`from consults import workflow`) is
    # not an edge to the package itself, which is empty.
    for name, targets in edges.items():
        edges[name] = {t for t in targets if t not in APPS}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back_through_others():
    assert [cycle for cycle in cycles(graph()) if cycle not in KNOWN_CYCLES] == []


def test_a_lower_app_never_imports_a_higher_one():
    wrong = [
        f"{source} imports {target}"
        for source, targets in graph().items()
        if source not in PROJECT_ROOT
        for target in targets
        if (app := source.split(".")[0]) != (other := target.split(".")[0]) and other not in APP_BELOW[app]
    ]
    assert wrong == []


def consults_layer(module: str) -> int:
    first = module.split(".")[1] if module.count(".") else ""
    for number, layer in enumerate(CONSULTS_LAYERS):
        if first in layer:
            return number
    raise AssertionError(f"{module} is in no layer of CONSULTS_LAYERS: add it")


def test_inside_consults_each_module_imports_only_the_layers_below_it():
    wrong = [
        f"{source} imports {target}"
        for source, targets in graph().items()
        if source.startswith("consults.")
        for target in targets
        if target.startswith("consults.") and consults_layer(target) >= consults_layer(source)
    ]
    assert wrong == []


def test_the_check_sees_a_circle_and_a_function_level_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    source = ROOT / "consults" / "services.py"
    assert "consults.models" in imported(source, set(dict(modules())))
