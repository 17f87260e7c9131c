"""The architecture as the imports show it: each layer imports only the layers below it.

Read from the source with ``ast``, so a forbidden import fails here even where no test
happens to execute it (an import inside a function included).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pagerd"

# What each package of pagerd may import of pagerd. The core is pure; the runtime knows
# the core only; adapters (store, notify, intake, web) know the core and the runtime's
# entry point, never each other's insides except where named; the wiring knows all.
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "telemetry": set(),
    "runtime": {"core", "runtime", "telemetry"},
    "store": {"core", "store", "telemetry"},
    "notify": {"core", "notify", "telemetry"},
    "wire": {"core", "wire"},
    "config": {"core", "config", "wire"},
    "web": {"core", "runtime", "web", "telemetry", "config", "wire"},
    "intake": {"core", "runtime", "intake", "telemetry", "web", "config", "wire"},
}
WIRING = {"app", "cli", "cluster", "sending", "systemd", "__init__", "__main__", "tools"}


def _layer(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def _imported(path: Path) -> set[str]:
    """The pagerd layers ``path`` imports (``from pagerd import x`` counts as layer x)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "pagerd":
                names = [f"pagerd.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "pagerd" and len(parts) > 1 and parts[1] != "__version__":
                found.add(parts[1])
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_known_layer() -> None:
    unknown = {_layer(p) for p in MODULES} - ALLOWED.keys() - WIRING
    assert unknown == set(), f"add these to ALLOWED or WIRING: {sorted(unknown)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_the_layers_below_it(path: Path) -> None:
    layer = _layer(path)
    if layer in WIRING:
        return
    forbidden = _imported(path) - ALLOWED[layer]
    assert forbidden == set(), f"{layer} must not import {sorted(forbidden)}"


def test_the_check_would_see_a_forbidden_import(tmp_path: Path) -> None:
    """The reader finds imports inside functions and ``from pagerd import x`` forms."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from pagerd import store\n"
        "def f() -> None:\n"
        "    from pagerd.intake.mqtt import MqttLink\n"
        "    import pagerd.web.server\n"
    )
    assert _imported(sample) == {"store", "intake", "web"}
