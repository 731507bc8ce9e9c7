"""The package's import graph has no cycle, lazy (function-level) imports included.

Data flows one way (config → data → stages → trainer → metrics → sweep → analysis); an import circle —
even one hidden by a function-level import — means two modules each own half of a concept.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import networkx as nx

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "raydetox"


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> nx.DiGraph:
    """Edges module → raydetox module it imports, from every import statement anywhere in the file."""
    modules = {_module_name(p, package): p for p in package.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative import: resolve against this module's package
                    base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                # `from raydetox import results` imports the module raydetox.results
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
            for target in targets:
                while target and target not in modules:  # `import raydetox.data.io as x` → its module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph.add_edge(name, target)
    return graph


def test_package_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert graph.number_of_edges() > 20, "the import graph looks empty: the parser found no imports"
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, "import cycles in raydetox/: " + "; ".join(" → ".join(c + [c[0]]) for c in cycles)


def test_cycle_detector_finds_a_lazy_import_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "raydetox"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from raydetox.b import thing\n")
    (pkg / "b.py").write_text("def thing():\n    from raydetox import a  # lazy\n    return a\n")
    assert list(nx.simple_cycles(import_graph(pkg))) != []


DATA_STEPS: tuple[str, ...] = ("io", "split", "lexicon", "clean", "difficulty", "stages")
"""raydetox/data/ modules that are steps of `prepare`, in the order it runs them (io is the load step)."""
DATA_SHARED: frozenset[str] = frozenset({"pairs", "langid"})
"""raydetox/data/ modules that are no step: what any step may use (the table contract, language id)."""


def test_data_steps_import_only_earlier_steps() -> None:
    graph = import_graph()
    data = {n.rpartition(".")[2] for n in graph if n.startswith("raydetox.data.")}
    unclassified = data - set(DATA_STEPS) - DATA_SHARED - {"prepare"}
    assert not unclassified, f"raydetox/data/ modules neither a step nor shared: {sorted(unclassified)}"
    wrong = []
    for i, step in enumerate(DATA_STEPS):
        allowed = set(DATA_STEPS[:i]) | DATA_SHARED
        for target in graph.successors(f"raydetox.data.{step}"):
            if target.startswith("raydetox.data.") and target.rpartition(".")[2] not in allowed:
                wrong.append(f"{step} → {target.rpartition('.')[2]}")
    for shared in DATA_SHARED:
        wrong += [f"{shared} → {t}" for t in graph.successors(f"raydetox.data.{shared}")
                  if t.startswith("raydetox.data.") and t.rpartition(".")[2] not in DATA_SHARED]
    assert not wrong, "data flows back in raydetox/data/: " + "; ".join(wrong)
    steps_used = {t.rpartition(".")[2] for t in graph.successors("raydetox.data.prepare")}
    assert set(DATA_STEPS) <= steps_used, f"prepare skips step(s) {sorted(set(DATA_STEPS) - steps_used)}"


def private_imports(package: Path = PACKAGE) -> list[str]:
    """``module: name`` for each leading-underscore name that a module takes from another raydetox module:
    ``from raydetox.x import _name`` or ``alias._name`` on an imported raydetox module (lazy ones too)."""
    modules = {_module_name(p, package): p for p in package.rglob("*.py")}
    found = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        module_aliases: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                module_aliases |= {a.asname for a in node.names if a.asname and a.name.startswith("raydetox")}
            elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("raydetox")):
                for alias in node.names:
                    target = f"{node.module}.{alias.name}" if node.module else alias.name
                    if target in modules:  # `from raydetox.data import io`: a module, used as io._x
                        module_aliases.add(alias.asname or alias.name)
                    elif alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{name}: from {node.module} import {alias.name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in module_aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                found.append(f"{name}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names() -> None:
    """A private name is its module's own; a second user means it wants a public, documented home."""
    assert not private_imports(), "private names used across raydetox modules: " + "; ".join(private_imports())


def test_private_import_detector_finds_both_forms(tmp_path: Path) -> None:
    pkg = tmp_path / "raydetox"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "io.py").write_text("def _read(): ...\ndef read(): ...\n")
    (pkg / "a.py").write_text("from raydetox.data.io import _read, read\n")
    (pkg / "b.py").write_text("def f():\n    from raydetox.data import io\n    return io._read(), io.read()\n")
    (pkg / "c.py").write_text("from raydetox.errors import short as _short\n")  # a public name, aliased
    assert private_imports(pkg) == ["raydetox.a: from raydetox.data.io import _read", "raydetox.b: io._read"]


def test_a_ray_train_trial_imports_no_training_stack() -> None:
    """What a ``ray_train`` trial process imports to run ``sweep._trial`` and build its TorchTrainer stays
    off transformers, datasets and peft: the stack is imported by the Ray Train worker alone (through
    ``ray_backend.train_loop_entry``), so the trial pays neither its seconds nor its memory."""
    import subprocess
    import sys

    code = ("import sys; import raydetox.sweep, raydetox.ray_backend; "
            "print(sorted(m for m in ('transformers', 'datasets', 'peft', 'raydetox.train_ray', "
            "'raydetox.experiment') if m in sys.modules))")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    from raydetox.ray_backend import train_loop_entry

    assert train_loop_entry.__module__ == "raydetox.ray_backend"  # pickled by reference to this light module
