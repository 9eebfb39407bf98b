"""The house rules of the package layout, checked by parsing every import in ``src/sarbridge``.

* Layers: ``core`` < shared parts (``data``, ``nn``, ``losses``, ``retrieval``, ``viz``) < ``tasks`` <
  ``app`` < the two facades (``sarbridge.api``, ``python -m sarbridge``). Imports only point down
  (or sideways inside one layer).
* No import cycles between modules, function-local imports included.
* Function-local imports only in ``app/cli`` (start-up time) or with a ``# lazy: <reason>`` comment
  on the import line (an optional dependency or an expensive one imported on first use).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sarbridge

PKG = Path(sarbridge.__file__).resolve().parent
LAYERS = {
    "resources": 0, "core": 0,
    "data": 1, "nn": 1, "losses": 1, "retrieval": 1, "viz": 1,
    "tasks": 2,
    "app": 3,
    "api": 4, "__main__": 4,
}
SHARED = {"data", "nn", "losses", "retrieval", "viz"}


def _modules() -> dict[str, Path]:
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The sarbridge module an import statement names (longest known prefix)."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in MODULES:
            return cand
        parts.pop()
    return None


def _imports(path: Path) -> list[tuple[str, int, bool, str]]:
    """(imported module, line, function-local, source line) for every sarbridge import."""
    src = path.read_text()
    lines = src.splitlines()
    tree = ast.parse(src)
    found: list[tuple[str, int, bool, str]] = []

    def visit(node: ast.AST, local: bool) -> None:
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, ast.Import):
                for a in ch.names:
                    found.append((a.name, ch.lineno, local, lines[ch.lineno - 1]))
            elif isinstance(ch, ast.ImportFrom) and ch.level == 0 and ch.module:
                found.append((ch.module, ch.lineno, local, lines[ch.lineno - 1]))
                for a in ch.names:  # "from sarbridge.x import submodule"
                    found.append((f"{ch.module}.{a.name}", ch.lineno, local, lines[ch.lineno - 1]))
            visit(ch, local or isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else 0


def _edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, path in MODULES.items():
        for name, _line, _local, _text in _imports(path):
            target = _resolve(name) if name.startswith("sarbridge") else None
            if target and target != mod and target != "sarbridge":
                graph[mod].add(target)
    return graph


def test_every_top_level_package_has_a_layer() -> None:
    tops = {m.split(".")[1] for m in MODULES if "." in m}
    assert tops <= set(LAYERS), f"packages without a layer: {sorted(tops - set(LAYERS))}"


def test_imports_only_point_down() -> None:
    bad = []
    for mod, path in MODULES.items():
        for name, line, _local, _text in _imports(path):
            target = _resolve(name) if name.startswith("sarbridge.") else None
            if target and _layer(target) > _layer(mod):
                bad.append(f"{path.relative_to(PKG.parent)}:{line}: {mod} imports {target}")
    assert not bad, "upward imports:\n" + "\n".join(sorted(set(bad)))


def test_no_import_cycles() -> None:
    graph = _edges()
    # strongly connected components (Tarjan), ignoring a package importing its own submodules' names
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def _unit(module: str) -> str:
    """The unit whose cycles count: ``sarbridge.tasks.<task>`` / ``sarbridge.app.<part>``, else the top package."""
    parts = module.split(".")
    return ".".join(parts[:3]) if len(parts) > 2 and parts[1] in ("tasks", "app") else ".".join(parts[:2])


def test_no_cycles_between_packages() -> None:
    """A cycle between two packages (data <-> retrieval, tasks.reid <-> tasks.bridge) is a cycle too."""
    units: dict[str, set[str]] = {}
    for mod, targets in _edges().items():
        for t in targets:
            a, b = _unit(mod), _unit(t)
            if a != b:
                units.setdefault(a, set()).add(b)

    def reaches(a: str, b: str) -> bool:
        seen, todo = set(), [a]
        while todo:
            x = todo.pop()
            if x == b:
                return True
            if x not in seen:
                seen.add(x)
                todo.extend(units.get(x, ()))
        return False

    bad = sorted({" <-> ".join(sorted((a, b))) for a, bs in units.items() for b in bs if reaches(b, a)})
    assert not bad, "package cycles:\n" + "\n".join(bad)


def _is_cli(mod: str) -> bool:
    return mod.startswith("sarbridge.app.cli") or mod in ("sarbridge.__main__",)


def test_function_local_imports_are_justified() -> None:
    bad = []
    for mod, path in MODULES.items():
        src = path.read_text()
        tree = ast.parse(src)
        lines = src.splitlines()
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and not _is_cli(mod):
                    text = lines[node.lineno - 1]
                    if "lazy:" not in text:
                        bad.append(f"{path.relative_to(PKG.parent)}:{node.lineno}: {text.strip()}")
    assert not bad, (
        f"{len(bad)} function-local imports without a '# noqa: PLC0415 - lazy: <reason>' comment "
        "(move them to the top of the module, or say why they must wait):\n" + "\n".join(sorted(set(bad)))
    )


@pytest.mark.parametrize("layer_pkg", sorted(SHARED))
def test_shared_parts_know_no_task(layer_pkg: str) -> None:
    """Shared parts take tensors and arrays, not task objects: no 'tasks' import hides in strings either."""
    for mod, path in MODULES.items():
        if mod.split(".")[1:2] == [layer_pkg]:
            for name, line, _l, _t in _imports(path):
                assert not name.startswith("sarbridge.tasks"), f"{path}:{line} imports {name}"
