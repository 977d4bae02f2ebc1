"""The service's folders show its layers: each subpackage imports only from the ones below it, so there
is no import cycle between them (issue 17 found three: repository <-> batching, pipelines, metrics).

    model       manifest (typed), loaded model, batch settings, version policy, pipeline protocol: a leaf
    runtime     onnxruntime sessions, thread budget, opening a version folder
    metrics     Prometheus metrics
    batching    the dynamic batcher, generic over the pipeline protocol
    pipelines   one pipeline per task (tokenize -> ORT -> post-process)
    registry    discovery on disk, the live set, the lifecycle (load, swap, unload, poll)
    grpc        servicers, the server, V2
    workers     the supervisor of --workers N: port reservation, worker processes, summed metrics
"""

from __future__ import annotations

import ast
import pathlib

import pytest

SERVICE = pathlib.Path(__file__).resolve().parents[1] / "service"
# Lowest first; a package may import any package listed before it (and the side packages below).
# workers (service/workers.py, a module) is the process level beside __main__: it starts and watches whole
# servers, so it sits on top; it imports no grpc today but may use anything below it.
LAYERS = ("model", "runtime", "metrics", "batching", "pipelines", "registry", "grpc", "workers")
SIDE = ("config", "observability", "security", "client")  # beside the layers: settings, logs, TLS/auth, CLI
# (service/__main__.py, the process, sits on top of everything.)


def imports_between_packages() -> set[tuple[str, str, str]]:
    """(importing package, imported package, file) for every `service.X` import across packages."""
    found = set()
    for path in SERVICE.rglob("*.py"):
        parts = path.relative_to(SERVICE).parts
        package = parts[0] if len(parts) > 1 else path.stem
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            modules = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for module in modules:
                if module.startswith("service."):
                    target = module.split(".")[1]
                    if target != package:
                        found.add((package, target, str(path.relative_to(SERVICE))))
    return found


def test_no_layer_imports_a_layer_above_it() -> None:
    upward = [(a, b, f) for a, b, f in imports_between_packages()
              if a in LAYERS and b in LAYERS and LAYERS.index(b) > LAYERS.index(a)]
    assert upward == [], f"imports against the layer order {LAYERS}: {sorted(upward)}"


@pytest.mark.parametrize("side", SIDE)
def test_side_packages_use_only_the_model_leaf(side: str) -> None:
    used = {b for a, b, _ in imports_between_packages() if a == side and b in LAYERS}
    assert used <= {"model"}, f"service/{side} imports {sorted(used)}"


def test_there_is_no_import_cycle_between_subpackages() -> None:
    graph: dict[str, set[str]] = {}
    for a, b, _ in imports_between_packages():
        graph.setdefault(a, set()).add(b)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    cycles = sorted(a for a in graph if reaches(a, a, {a}))
    assert cycles == [], f"packages on an import cycle: {cycles}"


def test_every_subpackage_is_placed() -> None:
    packages = {p.name for p in SERVICE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in SERVICE.glob("*.py")} - {"__init__", "__main__"}  # config.py
    assert packages | modules == set(LAYERS) | set(SIDE)
