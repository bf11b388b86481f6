"""Layers point one way: scripts -> src.train / src.eval -> src.models / src.data -> src.utils.

Nothing under src/ imports a script or the command-line module (src.config), and nothing below
the scripts takes the parsed command line: it gets explicit settings.
"""

import ast
from pathlib import Path

import pytest

from helpers import REPO_ROOT

SCRIPTS = {"main", "infer", "visualize"}
# What each package of src/ may import from the project, besides itself.
ALLOWED = {
    "utils": set(),
    "models": {"utils"},
    "data": {"utils"},
    "train": {"models", "data", "utils"},
    "eval": {"train", "models", "data", "utils"},  # train.checkpoint reads checkpoints
    "tools": {"eval", "train", "models", "utils"},  # export restores encoders as infer.py does
}


def project_imports(path: Path) -> set:
    """Dotted names of the project modules a file imports (relative imports resolved)."""
    package = path.relative_to(REPO_ROOT).with_suffix("").parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(module)
    return {name for name in names if name.split(".")[0] in SCRIPTS | {"src"}}


def src_files():
    return sorted(p for p in (REPO_ROOT / "src").rglob("*.py") if p.parent.name != "src")


@pytest.mark.parametrize("path", src_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_src_imports_point_down(path):
    own = path.relative_to(REPO_ROOT / "src").parts[0]
    for name in project_imports(path):
        parts = name.split(".")
        assert parts[0] != "main" and parts[0] not in SCRIPTS, f"imports the script {name}"
        assert name != "src.config", "imports the command-line module"
        if len(parts) > 1 and parts[1] != own:
            assert parts[1] in ALLOWED[own], f"{own} imports {name}"


def test_the_check_sees_relative_imports(tmp_path):
    assert project_imports(REPO_ROOT / "src" / "eval" / "evaluate.py") >= {
        "src.train.checkpoint",
        "src.eval.features",
        "src.models",
    }


def takes_the_command_line(path: Path) -> list[str]:
    """The functions of a file with a parameter named ``args`` or typed ``argparse.Namespace``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                typed = arg.annotation is not None and "Namespace" in ast.unparse(arg.annotation)
                if arg.arg == "args" or typed:
                    found.append(getattr(node, "name", "lambda"))
    return found


@pytest.mark.parametrize("path", src_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_src_takes_explicit_settings_not_the_command_line(path):
    assert takes_the_command_line(path) == []
    assert "faults" not in {name.split(".")[-1] for name in project_imports(path)}


def test_the_check_sees_an_args_parameter():
    assert takes_the_command_line(REPO_ROOT / "src" / "config.py")  # the command-line module
