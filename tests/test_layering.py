"""The pipeline is visible in the imports: no circles, one direction (pyproject.toml's import-linter contract),
own modules imported at the top (inside a function only where that keeps an optional package lazy), and
functions short enough to read."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "resnet_deploy"
#: modules that import an optional package (onnxruntime, tensorrt, pycuda, openvino, matplotlib, tritonclient)
#: at their top: importing them inside a function keeps that package unloaded until it is needed
LAZY_MODULES = {
    "resnet_deploy.runtimes.onnxruntime",
    "resnet_deploy.runtimes.tensorrt",
    "resnet_deploy.runtimes.openvino",
    "resnet_deploy.runtimes.aoti",
    "resnet_deploy.serve",
}
MAX_FUNCTION_LINES = 80
MAX_COMMAND_LINES = 50


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("resnet_deploy", exclude_type_checking_imports=True)


def test_no_import_circles() -> None:
    graph = _graph()
    circles = [
        (importer, imported)
        for importer in sorted(graph.modules)
        for imported in graph.find_modules_directly_imported_by(importer)
        if graph.chain_exists(importer=imported, imported=importer)
    ]
    assert not circles, f"import circles through: {circles[:5]}"


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter is not installed (the dev extra)")
def test_the_layers_contract_holds() -> None:
    done = subprocess.run(["lint-imports"], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "0 broken" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]


def _python_files() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_own_modules_are_imported_at_the_top() -> None:
    """Inside a function only to keep an optional package lazy: a module that imports one at its top."""
    inside = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for child in ast.walk(node):
                if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("resnet_deploy"):
                    if child.module not in LAZY_MODULES:
                        inside.append(f"{_module_name(path)}.{node.name}: from {child.module} import ...")
    assert not inside, "\n".join(inside)


def _functions(path: Path) -> list[tuple[str, int, list[str]]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            decorators = [ast.unparse(d) for d in node.decorator_list]
            out.append((node.name, node.end_lineno - node.lineno + 1, decorators))  # type: ignore[operator]
    return out


def test_no_function_is_too_long_to_read() -> None:
    long = [
        f"{_module_name(path)}.{name}: {lines} lines"
        for path in _python_files()
        for name, lines, _ in _functions(path)
        if lines > MAX_FUNCTION_LINES
    ]
    assert not long, "\n".join(long)


def test_cli_commands_are_thin() -> None:
    """A command parses its options and calls the layers below; the work is theirs."""
    long = [
        f"{path.name}:{name}: {lines} lines"
        for path in sorted((SRC / "cli").glob("*.py"))
        for name, lines, decorators in _functions(path)
        if any("command" in d or "option_groups" in d for d in decorators) and lines > MAX_COMMAND_LINES
    ]
    assert not long, "\n".join(long)


def test_the_package_imports_without_its_optional_backends() -> None:
    """onnxruntime, TensorRT, OpenVINO and matplotlib are extras: importing the CLIs must not need them."""
    code = (
        "import sys\n"
        "for name in ('onnxruntime', 'tensorrt', 'openvino', 'matplotlib', 'tritonclient'):\n"
        "    sys.modules[name] = None\n"
        "import resnet_deploy.cli.bench, resnet_deploy.cli.export\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
