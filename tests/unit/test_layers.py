"""The layers import only what they may: a crossing fails here, naming the module and import.

model -> nothing of ours but model; compile -> model and the pipeline declaration, no I/O;
gRPC only in p4/, the embedded target (softswitch/) and the CLI; Felix's fds only in felix/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "felix_p4"
IO_MODULES = {"asyncio", "socket", "subprocess", "grpc", "pyroute2", "aiohttp", "os", "io"}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


MODULES = _modules()


def _imports(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _ours(imports: set[str]) -> set[str]:
    return {i for i in imports if i.split(".")[0] in ("felix_p4", "calico_proto")}


def _within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _in(layer: str) -> list[str]:
    return [m for m in MODULES if _within(m, layer)]


def test_every_layer_has_modules():
    for layer in ("felix_p4.model", "felix_p4.compile", "felix_p4.felix", "felix_p4.p4"):
        assert _in(layer), layer


@pytest.mark.parametrize("module", _in("felix_p4.model"))
def test_model_imports_only_the_model(module):
    crossings = {i for i in _ours(_imports(MODULES[module])) if not _within(i, "felix_p4.model")}
    assert not crossings, f"{module} imports {sorted(crossings)}"


@pytest.mark.parametrize("module", _in("felix_p4.compile"))
def test_compile_imports_model_and_declaration_only_and_does_no_io(module):
    imports = _imports(MODULES[module])
    crossings = {
        i
        for i in _ours(imports)
        if not _within(i, "felix_p4.model", "felix_p4.pipeline", "felix_p4.compile")
    }
    io = {i for i in imports if i.split(".")[0] in IO_MODULES}
    assert not crossings and not io, f"{module} imports {sorted(crossings | io)}"


@pytest.mark.parametrize("module", _in("felix_p4.pipeline"))
def test_the_declaration_is_pure(module):
    imports = _imports(MODULES[module])
    crossings = {i for i in _ours(imports) if not _within(i, "felix_p4.pipeline")}
    io = {i for i in imports if i.split(".")[0] in IO_MODULES}
    assert not crossings and not io, f"{module} imports {sorted(crossings | io)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_p4_the_embedded_target_and_the_cli_speak_grpc(module):
    if _within(module, "felix_p4.p4", "felix_p4.softswitch", "felix_p4.cli"):
        return
    grpc = {i for i in _imports(MODULES[module]) if i.split(".")[0] == "grpc"}
    assert not grpc, f"{module} imports {sorted(grpc)}"


def _touches_felix_fds(tree: ast.Module) -> bool:
    """Opens or checks a file descriptor by number, or reads a pipe (how fds 3/4 are used)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if (
                isinstance(owner, ast.Name)
                and owner.id == "os"
                and node.func.attr in ("fdopen", "fstat")
            ):
                return True
            if node.func.attr == "connect_read_pipe":
                return True
    return False


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_felix_touches_felix_fds(module):
    if _within(module, "felix_p4.felix"):
        return
    assert not _touches_felix_fds(MODULES[module]), module


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_says_its_job_on_its_first_line(module):
    doc = ast.get_docstring(MODULES[module])
    assert doc and doc.splitlines()[0].strip(), module
