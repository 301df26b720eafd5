"""dvc.yaml's code deps are exactly the code each stage runs.

For every stage whose cmd is ``python -m stages.<name>``, the project modules (heser/, stages/)
it imports, transitively, are found by static analysis (``ast``; imports inside functions
count, since they run when the function does) and compared with the stage's deps, both ways:
a module the stage imports must be covered by a dep (a directory dep covers what is under it),
and a heser/ or stages/ dep must hold only modules the stage imports. A missing dep means DVC
does not rerun the stage when its code changes; an extra one reruns it for nothing.

``from heser.pkg import name`` resolves to heser/pkg/name.py when that is a module, else to
heser/pkg/__init__.py. Python also runs every parent package's __init__.py; one that only
defines names (a docstring, ``__version__``) matters only to a module that imports those names
(then it is resolved as above), so a parent __init__.py counts on its own only when it imports
something.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from tests.conftest import ROOT

PROJECT_PACKAGES = ("heser", "stages")
STAGE_CMD = re.compile(r"python -m (stages\.\w+)")


def module_file(name: str, root: Path) -> Path | None:
    """The project file of a dotted module name (a package: its __init__.py), else None."""
    parts = name.split(".")
    if parts[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path) -> set[Path]:
    """The project files one module's import statements resolve to (anywhere in it)."""
    package = module_name(path, root) if path.name == "__init__.py" else (
        module_name(path, root).rpartition(".")[0])
    found: set[Path | None] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(module_file(alias.name, root) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y, from .. import z
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                found.add(module_file(f"{base}.{alias.name}", root) or module_file(base, root))
    found.discard(None)
    return found


def imports_anything(path: Path) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    return any(isinstance(node, ast.Import | ast.ImportFrom) and not (
        isinstance(node, ast.ImportFrom) and node.module == "__future__")
        for node in ast.walk(tree))


def parent_inits(path: Path, root: Path) -> list[Path]:
    """The __init__.py of every package above ``path`` (which Python runs on import)."""
    inits = []
    folder = path.parent
    while folder != root:
        if path != folder / "__init__.py" and (folder / "__init__.py").is_file():
            inits.append(folder / "__init__.py")
        folder = folder.parent
    return inits


def code_closure(entry: Path, root: Path) -> set[Path]:
    """Every project file the module ``entry`` runs by importing, ``entry`` included."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(imports_of(path, root))
        todo.extend(init for init in parent_inits(path, root) if imports_anything(init))
    return seen


def stage_code(root: Path) -> dict[str, tuple[set[str], list[str]]]:
    """Per `python -m stages.<name>` stage: (its code files, its heser/ and stages/ deps),
    all relative to ``root``."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        match = STAGE_CMD.fullmatch(str(stage.get("cmd", "")).strip())
        if not match:
            continue
        entry = module_file(match.group(1), root)
        assert entry is not None, f"dvc.yaml stage {name}: no module {match.group(1)}"
        code = {path.relative_to(root).as_posix() for path in code_closure(entry, root)}
        deps = [str(dep).rstrip("/") for dep in stage.get("deps", [])]
        code_deps = [dep for dep in deps if dep.split("/")[0] in PROJECT_PACKAGES]
        out[name] = (code, code_deps)
    return out


def covered(file: str, deps: list[str]) -> bool:
    return any(file == dep or file.startswith(dep + "/") for dep in deps)


def missing_deps(root: Path) -> dict[str, list[str]]:
    """Per stage, the code files it imports that no dep covers."""
    result = {}
    for name, (code, deps) in stage_code(root).items():
        missing = sorted(file for file in code if not covered(file, deps))
        if missing:
            result[name] = missing
    return result


def extra_deps(root: Path) -> dict[str, list[str]]:
    """Per stage, its heser/ and stages/ deps that hold a file it does not import (a
    directory dep: named with the modules under it that are not imported)."""
    result = {}
    for name, (code, deps) in stage_code(root).items():
        extra = []
        for dep in deps:
            path = root / dep
            if path.is_dir():  # a package marker (an __init__.py that imports nothing) is fine
                unused = sorted(p.relative_to(root).as_posix() for p in path.rglob("*.py")
                                if p.relative_to(root).as_posix() not in code
                                and not (p.name == "__init__.py" and not imports_anything(p)))
                if unused:
                    extra.append(f"{dep} (covers {', '.join(unused)}, not imported)")
            elif dep not in code:
                extra.append(f"{dep} (not imported)" if path.exists() else f"{dep} (no such file)")
        if extra:
            result[name] = extra
    return result


def _report(per_stage: dict[str, list[str]]) -> str:
    return "".join(f"  {name}:\n" + "".join(f"      - {item}\n" for item in items)
                   for name, items in per_stage.items())


def test_every_stage_lists_the_code_it_imports():
    assert stage_code(ROOT), "no `python -m stages.<name>` stage in dvc.yaml"
    missing = missing_deps(ROOT)
    assert not missing, ("dvc.yaml: these stages import project code that their deps do not "
                         "cover, so DVC would not rerun them when it changes; add to each "
                         "stage's deps:\n" + _report(missing))


def test_every_code_dep_is_imported_by_its_stage():
    extra = extra_deps(ROOT)
    assert not extra, ("dvc.yaml: these heser/ or stages/ deps hold code the stage does not "
                       "import, so DVC would rerun it for nothing; remove them, or list the "
                       "imported files instead of the directory:\n" + _report(extra))


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_the_import_walk_follows_every_form_of_import(tmp_path):
    _write(tmp_path, {
        "stages/__init__.py": '"""docstring only: not code the stage depends on"""\n',
        "stages/run.py": "from heser import tool\nfrom heser.pkg.mod import CONSTANT\n",
        "heser/__init__.py": '__version__ = "1"\n',
        "heser/tool.py": "def f():\n    import heser.lazy\n",
        "heser/lazy.py": "from . import rel\n",
        "heser/rel.py": "",
        "heser/pkg/__init__.py": "from heser.pkg import reexported\n",
        "heser/pkg/reexported.py": "import numpy\n",
        "heser/pkg/mod.py": "CONSTANT = 1\n",
        "heser/pkg/unused.py": "",
        "heser/pkg/sub/__init__.py": '"""a package marker"""\n',
        "heser/unused.py": "",
        "dvc.yaml": yaml.safe_dump({"stages": {
            "run": {"cmd": "python -m stages.run",
                    "deps": ["data/x", "stages/run.py", "heser/tool.py", "heser/pkg",
                             "heser/gone.py"]},
            "other": {"cmd": "dvc exp show", "deps": ["heser"]}}}),
    })
    code, deps = stage_code(tmp_path)["run"]
    assert code == {"stages/run.py", "heser/tool.py", "heser/lazy.py", "heser/rel.py",
                    "heser/pkg/__init__.py", "heser/pkg/reexported.py", "heser/pkg/mod.py"}
    assert deps == ["stages/run.py", "heser/tool.py", "heser/pkg", "heser/gone.py"]
    assert set(stage_code(tmp_path)) == {"run"}
    assert missing_deps(tmp_path) == {"run": ["heser/lazy.py", "heser/rel.py"]}
    assert extra_deps(tmp_path) == {"run": [
        "heser/pkg (covers heser/pkg/unused.py, not imported)", "heser/gone.py (no such file)"]}
