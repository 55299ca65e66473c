"""The map is true: dvc.yaml declares exactly the code and the params each stage's code reads.

Derived from the code, not from dvc.yaml: each stage's module (the one its ``cmd`` runs) and every
module of stages/ it imports, transitively (function-level imports included), must be its code
deps; the params its code loads (``params.load`` calls, and ``compute`` for the stages ``run``
applies it to) must be its params. DVC hashes what is declared, so a module missing from the deps
changes outputs while ``dvc status`` says all is up to date, and a param read but not declared is
never tracked. And ``dvc.lock`` may name only stages ``dvc.yaml`` has (DVC never prunes it).
"""
from __future__ import annotations

import ast
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml

from stages.lib import params as params_module
from tests.conftest import ROOT

# Modules a stage may import without declaring them, each with its reason; the tests below check
# that each stays that way.
UNDECLARED = {
    "stages/__init__.py": "a docstring-only package init: importing it computes nothing",
    "stages/lib/params.py": "schemas and validation only: every value a stage uses comes from params.yaml, "
                            "which DVC tracks key by key; so a new params block does not rerun every stage",
}


@dataclass(frozen=True)
class Stage:
    name: str
    module: str             # stages/encode.py
    argument: str | None    # ae, for encode@ae
    deps: frozenset[str]    # declared file deps
    params: frozenset[str]  # declared keys of params.yaml, as written (blocks or dotted keys)


@cache
def stages() -> tuple[Stage, ...]:
    """Every stage of dvc.yaml, foreach expanded, as DVC itself reads it."""
    from dvc.repo import Repo

    out = []
    with Repo(str(ROOT)) as repo:
        for stage in repo.index.stages:
            argv = shlex.split(stage.cmd)
            assert argv[:3] == ["python", "-m", argv[2]] and argv[2].startswith("stages."), stage.cmd
            declared = {str(Path(d.def_path)) for d in stage.deps if not d.def_path.endswith("params.yaml")}
            keys = {k for d in stage.deps if d.def_path.endswith("params.yaml") for k in d.params}
            out.append(Stage(stage.addressing, argv[2].replace(".", "/") + ".py", argv[3] if len(argv) > 3 else None,
                             frozenset(declared), frozenset(keys)))
    return tuple(out)


# --- imports ------------------------------------------------------------------------------------

def _module_file(dotted: str) -> str | None:
    """stages.lib.files -> stages/lib/files.py (or the package's __init__.py); None outside stages/."""
    if dotted != "stages" and not dotted.startswith("stages."):
        return None
    path = ROOT / dotted.replace(".", "/")
    if path.with_suffix(".py").is_file():
        return str(path.with_suffix(".py").relative_to(ROOT))
    if (path / "__init__.py").is_file():
        return str((path / "__init__.py").relative_to(ROOT))
    return None


def _with_packages(dotted: str) -> list[str]:
    """Importing a.b.c runs a/__init__, a/b/__init__ and a/b/c."""
    parts = dotted.split(".")
    return [m for m in (_module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1)) if m]


@cache
def imports_of(file: str) -> frozenset[str]:
    """The files of stages/ that ``file`` imports directly, anywhere in it (functions included)."""
    tree = ast.parse((ROOT / file).read_text(), file)
    package = file.rsplit("/", 1)[0].replace("/", ".") if "/" in file else ""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(_with_packages(alias.name))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from .files import y
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            found.update(_with_packages(base))
            for alias in node.names:  # from stages.lib import files: a submodule, or just a name
                sub = _module_file(f"{base}.{alias.name}")
                if sub and sub != _module_file(base):
                    found.add(sub)
    found.discard(file)
    return frozenset(found)


def closure(file: str, computes: bool = True) -> set[str]:
    """``file`` and everything of stages/ it imports, transitively. ``run()`` (stages/lib/__init__.py)
    imports compute.py only for a stage that computes (not ``run(main, compute=False)``)."""
    seen, todo = set(), [file]
    while todo:
        f = todo.pop()
        if f not in seen:
            seen.add(f)
            found = imports_of(f)
            if f == "stages/lib/__init__.py" and not computes:
                found -= {"stages/lib/compute.py", "stages/lib/params.py"}
            todo.extend(found)
    return seen


def test_every_stage_declares_exactly_the_code_it_imports() -> None:
    problems = []
    for stage in stages():
        expected = closure(stage.module, applies_compute(stage.module)) - set(UNDECLARED)
        code = {d for d in stage.deps if d.endswith(".py")}
        for d in stage.deps:  # data files (explorer.html, the models) must exist or be produced
            assert not d.startswith("stages/") or (ROOT / d).exists(), f"{stage.name}: {d} does not exist"
        if code != expected:
            problems.append(f"{stage.name}: imported but not in deps: {sorted(expected - code)}; "
                            f"in deps but not imported: {sorted(code - expected)}")
    assert not problems, "\n".join(problems)


def test_the_undeclared_modules_hold_no_computation() -> None:
    # The package init: a docstring and nothing else.
    body = ast.parse((ROOT / "stages/__init__.py").read_text()).body
    assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), \
        "stages/__init__.py must stay a docstring (it is imported by every stage and declared by none)"
    # params.py: imports, schema classes, validating functions and constants; it imports no module of
    # stages/ but the package (for StageError) ...
    tree = ast.parse((ROOT / "stages/lib/params.py").read_text())
    allowed = (ast.Import, ast.ImportFrom, ast.ClassDef, ast.FunctionDef, ast.Assign, ast.AnnAssign, ast.Expr)
    for node in tree.body:
        assert isinstance(node, allowed), f"params.py line {node.lineno}: {type(node).__name__} at top level"
        if isinstance(node, ast.Expr):
            assert isinstance(node.value, ast.Constant), f"params.py line {node.lineno}: a call at import time"
    assert imports_of("stages/lib/params.py") <= {"stages/__init__.py", "stages/lib/__init__.py"}, \
        imports_of("stages/lib/params.py")
    # ... and no schema has a default: a value missing from params.yaml is an error, never a value
    # that DVC does not see.
    for name, schema in vars(params_module).items():
        if isinstance(schema, type) and issubclass(schema, params_module.Block) and schema is not params_module.Block:
            with_default = [f for f, info in schema.model_fields.items() if not info.is_required()]
            assert not with_default, f"params.{name}: fields with a default: {with_default}"


def test_the_lock_names_only_stages_of_dvc_yaml() -> None:
    locked = set(yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"])
    stale = locked - {s.name for s in stages()}
    assert not stale, f"dvc.lock holds stages dvc.yaml no longer has (remove them): {sorted(stale)}"


def test_make_repro_waves_are_independent_stages_of_dvc_yaml() -> None:
    """`make repro` runs each wave of REPRO_WAVES as two chains side by side, each chain's stages one
    after another by `dvc repro -s` (which runs no upstream stage). So every stage named is a stage of
    dvc.yaml; no stage of one chain is upstream of a stage of the other (they would run at the same
    time, the later on stale inputs); and each stage's upstream is fetch, a stage of an earlier wave
    or one before it in its chain (else it would run before its inputs, and `dvc repro` again)."""
    import re

    import networkx as nx
    from dvc.repo import Repo

    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    waves = re.search(r"^REPRO_WAVES := (.+)$", makefile, re.M).group(1).split()
    assert waves, "no REPRO_WAVES in the Makefile"
    with Repo(str(ROOT)) as repo:
        graph = repo.index.graph  # edges from a stage to the stages it depends on
        by_name = {stage.addressing: stage for stage in graph}
        done = {"fetch"}
        for wave in waves:
            chains = [chain.split("+") for chain in wave.split(",")]
            assert len(chains) == 2, f"{wave}: not two chains"
            unknown = {n for chain in chains for n in chain} - set(by_name)
            assert not unknown, f"{wave}: not stages of dvc.yaml: {sorted(unknown)}"
            for mine, other in (chains, chains[::-1]):
                for n in mine:
                    for m in other:
                        assert not nx.has_path(graph, by_name[n], by_name[m]), f"{wave}: {n} depends on {m}"
                for i, n in enumerate(mine):
                    upstream = {s.addressing for s in nx.descendants(graph, by_name[n])}
                    early = upstream - done - set(mine[:i])
                    assert not early, f"{wave}: {n} runs before its upstream {sorted(early)}"
            done |= {n for chain in chains for n in chain}


# --- params -------------------------------------------------------------------------------------

def _literal(node: ast.expr, argument: str | None) -> str | tuple | None:
    """A string, an f-string whose names are the stage's argument (f"generate.{kind}"), or a tuple of
    strings; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and argument is not None:
        return "".join(v.value if isinstance(v, ast.Constant) else argument for v in node.values)
    if isinstance(node, ast.Tuple):
        items = [_literal(e, argument) for e in node.elts]
        return tuple(items) if all(isinstance(i, str) for i in items) else None
    if isinstance(node, ast.Name):
        return node.id  # main's argument or a module constant: resolved by the caller
    return None


def _constants(tree: ast.Module) -> dict[str, tuple]:
    """Module-level NAME = ("a", "b") tuples (beta_sweep's VAE_KEYS)."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = _literal(node.value, None)
            if isinstance(value, tuple):
                out[node.targets[0].id] = value
    return out


def main_argument(tree: ast.Module) -> str | None:
    """The name of main's parameter (the stage's command-line argument), if it has one."""
    main = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"), None)
    return main.args.args[0].arg if main and main.args.args else None


def loaded_keys(file: str, argument: str | None) -> set[str]:
    """The params keys ``file`` loads: "block" for a whole block, "block.key" for keys=(...)."""
    tree = ast.parse((ROOT / file).read_text(), file)
    constants = _constants(tree)
    keys: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "params"):
            continue
        block = _literal(node.args[0], argument)
        if isinstance(node.args[0], ast.Name):  # main(kind): params.load(kind, ...)
            block = argument if node.args[0].id == main_argument(tree) else None
        assert isinstance(block, str), \
            f"{file} line {node.lineno}: params.load's block must be a literal, or the stage's argument"
        only = next((kw.value for kw in node.keywords if kw.arg == "keys"), None)
        if only is None:
            keys.add(block)
            continue
        names = _literal(only, argument)
        names = constants.get(names, names) if isinstance(names, str) else names
        assert isinstance(names, tuple), f"{file} line {node.lineno}: keys= must be a literal tuple or a constant"
        keys.update(f"{block}.{k}" for k in names)
    return keys


def applies_compute(module: str) -> bool:
    """The stage's ``run(main, ...)`` call: compute unless ``compute=False``."""
    tree = ast.parse((ROOT / module).read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
             and n.func.id == "run"]
    assert len(calls) == 1, f"{module}: expected one run(main, ...) call"
    flag = next((kw.value for kw in calls[0].keywords if kw.arg == "compute"), None)
    return not (isinstance(flag, ast.Constant) and flag.value is False)


def leaves(keys: set[str] | frozenset[str], tree: dict) -> set[str]:
    """Dotted keys expanded to the leaf keys of params.yaml under them (a block: all its keys)."""
    out = set()
    for key in keys:
        node = tree
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{key}: not in params.yaml"
            node = node[part]
        stack = [(key, node)]
        while stack:
            k, v = stack.pop()
            if isinstance(v, dict):
                stack.extend((f"{k}.{sub}", sv) for sub, sv in v.items())
            else:
                out.add(k)
    return out


def stage_reads(stage: Stage) -> set[str]:
    """The params keys a stage's code reads, from its import closure."""
    computes = applies_compute(stage.module)
    keys = {k for f in closure(stage.module, computes) if f not in ("stages/lib/__init__.py", "stages/lib/params.py")
            for k in loaded_keys(f, stage.argument)}
    if computes:  # run() loads compute before main
        keys.add("compute")
    return keys


def test_every_stage_declares_exactly_the_params_its_code_reads() -> None:
    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    problems = []
    for stage in stages():
        read, declared = leaves(stage_reads(stage), tree), leaves(stage.params, tree)
        if read != declared:
            problems.append(f"{stage.name}: read but not declared: {sorted(read - declared)}; "
                            f"declared but not read: {sorted(declared - read)}")
    assert not problems, "\n".join(problems)


def test_params_are_read_only_through_params_load() -> None:
    """Anything else (yaml.safe_load of params.yaml, read_params) would escape the test above."""
    for file in sorted(ROOT.glob("stages/**/*.py")):
        rel = str(file.relative_to(ROOT))
        if rel == "stages/lib/params.py":
            continue
        text = file.read_text()
        for way in ("read_params", "PARAMS_FILE", "safe_load", "YAML("):
            assert way not in text, f"{rel} reads params.yaml itself ({way})"


# --- the derivations themselves -------------------------------------------------------------------

def test_the_import_scan_sees_function_level_and_package_imports(tmp_path: Path) -> None:
    """The derivation the tests above rely on: imports inside functions count, and so do the package
    inits that any ``from stages.lib.x import y`` runs."""
    got = closure("stages/encode.py")
    assert {"stages/lib/__init__.py", "stages/lib/models.py", "stages/lib/compute.py", "stages/lib/mnist.py",
            "stages/lib/files.py"} <= got  # models and compute are imported inside main()
    assert "stages/lib/plotting.py" not in got


@pytest.mark.parametrize("source, argument, expected", [
    ('params.load("vae", params.VAEParams)', None, {"vae"}),
    ('params.load("vae", params.VAEParams, keys=("beta",))', None, {"vae.beta"}),
    ('params.load(f"generate.{kind}", params.GridParams)', "cvae", {"generate.cvae"}),
    ('def main(kind):\n    params.load(kind, params.TrainParams)', "ae", {"ae"}),
    ('K = ("a", "b")\nparams.load("plot", params.PlotParams, keys=K)', None, {"plot.a", "plot.b"}),
])
def test_the_params_scan_reads_each_form_of_load(tmp_path: Path, monkeypatch, source: str, argument: str | None,
                                                 expected: set[str]) -> None:
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "x.py").write_text(source + "\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert loaded_keys("stages/x.py", argument) == expected
