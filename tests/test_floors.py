"""The floors (issue 25, items 1 and 3): ``adderconv/`` is the ground floor and imports nothing above it
(``adderconv.analysis``, ``adderconv.converters``, ``adderconv.cli``, the floors the package's finder maps in), and
no two modules import each other, directly or around a loop.

Two checks. What an import really loads, in a fresh interpreter (the ground floor without the converter, its graph
library or the counting capture). And the static import graph: every module-level import of every module under
``adderconv/``, ``analysis/``, ``converters/`` and ``cli.py``, read with ``ast``, relative imports and the finder's
names resolved. Imports inside functions are not arrows (they run on use, not on import). Imports under
``if TYPE_CHECKING:`` are arrows for the cycle check (a cycle that only a type annotation holds is still a knot for
a reader, and none is needed: a shared piece goes where both sides can import it one way), but not for the floors:
they load nothing, and a ground-floor function may name an upper floor's type it receives (the fine-tuning entry
takes a conversion ``Policy``).
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
UPPER = ("adderconv.analysis", "adderconv.converters", "adderconv.cli")
# `python -m adderconv` runs the CLI: the entry point is on the top floor, whatever folder it sits in.
ENTRY_POINTS = {"adderconv.__main__"}


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)


def _loaded_after(imports: str) -> list[str]:
    """Names of the modules in ``sys.modules`` after ``imports`` in a fresh interpreter."""
    proc = _python(f"import json, sys\n{imports}\nprint(json.dumps(sorted(sys.modules)))")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _upper(names: list[str]) -> list[str]:
    return [n for n in names if n.startswith(UPPER) or n == "networkx" or n.startswith("networkx.")]


def test_the_ground_floor_imports_nothing_above_it():
    loaded = _loaded_after("import adderconv.ops, adderconv.layers, adderconv.loading")
    assert "adderconv.loading" in loaded and "adderconv.quant.recipe" in loaded     # the check saw the chain
    assert _upper(loaded) == [], "the ground floor loaded the floors above it"
    assert "torch" in loaded and _upper(_loaded_after("import adderconv")) == []


def test_the_counting_vocabulary_is_one_set_of_objects():
    """The analysis re-exports the ground floor's vocabulary and registry: the same objects, one registry."""
    import torch

    import adderconv.ops  # noqa: F401  (registers the op's handle)
    from adderconv import counting, op_registry
    from adderconv.analysis import counts, registry

    for name in counts.__all__:
        assert getattr(counts, name) is getattr(counting, name), name
    for name in registry.__all__:
        assert getattr(registry, name) is getattr(op_registry, name), name
    import adderconv.analysis as analysis
    assert analysis.Tally is counting.Tally and analysis.register is op_registry.register
    # the op registered its handle where the captures look
    assert registry.lookup(torch.ops.adderconv.adder_conv2d.default).category == "adder"


def test_recipe_replay_names_are_the_converters_names():
    from adderconv import blocks, recipe
    from adderconv.converters import AdderBlock, apply_recipe, build_adder, default_mapping
    from adderconv.converters.discover import aliases
    from adderconv.converters.swap import replace_module

    assert (apply_recipe, replace_module, aliases) == (recipe.apply_recipe, recipe.replace_module, recipe.aliases)
    assert (AdderBlock, build_adder, default_mapping) == (blocks.AdderBlock, blocks.build_adder, blocks.default_mapping)


def test_loading_a_converted_file_needs_no_graph_library(tmp_path):
    """Replaying a saved conversion (and its quantisation) loads neither networkx nor any converter module."""
    import torch

    import adderconv
    from adderconv.converters import save_converted

    shape = adderconv.default_input_shape("lenet5_bn")
    net = adderconv.convert(adderconv.get_model("lenet5_bn"), example_inputs=(torch.zeros(shape),))
    path = tmp_path / "net.safetensors"
    save_converted(net, path, arch="lenet5_bn")
    code = (f"import adderconv.loading\nnet = adderconv.loading.load_model({str(path)!r})\n"
            f"assert type(net).__name__ and net.adderconv_report.converted == [] and net.adderconv_report.previous")
    loaded = _loaded_after(code)
    assert _upper(loaded) == []          # the report a replay attaches is ground-floor data (adderconv.conversion)
    reloaded = adderconv.load_model(path)
    assert [type(m).__name__ for m in reloaded.modules()] == [type(m).__name__ for m in net.modules()]


# --- the static import graph ------------------------------------------------------------------------------------

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] in ("analysis", "converters", "cli"):       # the finder's names (adderconv/__init__.py)
        parts.insert(0, "adderconv")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    files = [p for folder in ("adderconv", "analysis", "converters") for p in (ROOT / folder).rglob("*.py")]
    return {_module_name(p): p for p in [*files, ROOT / "cli.py"]}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level(body: list[ast.stmt], typing: bool = False):
    """``(import statement, under TYPE_CHECKING)`` for the imports a module's body holds outside functions and
    classes."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, typing
        elif isinstance(node, ast.If):
            yield from _module_level(node.body, typing or _type_checking(node))
            yield from _module_level(node.orelse, typing)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _module_level(block, typing)
        elif isinstance(node, ast.With):
            yield from _module_level(node.body, typing)


def _targets(module: str, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> list[str]:
    """The modules an import statement names: ``from . import x`` is module ``x`` when there is one."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        package = module if modules[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def _graph() -> nx.DiGraph:
    modules = _sources()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for module, path in modules.items():
        for node, typing in _module_level(ast.parse(path.read_text(encoding="utf-8")).body):
            for target in _targets(module, node, modules):
                while target not in modules and "." in target:    # adderconv.x.Name -> adderconv.x
                    target = target.rpartition(".")[0]
                if target in modules and target != module:
                    typing = typing and graph.get_edge_data(module, target, {"typing": True})["typing"]
                    graph.add_edge(module, target, line=node.lineno, typing=typing)
    return graph


def _floor(module: str) -> str:
    return "upper" if module.startswith(UPPER) or module in ENTRY_POINTS else "ground"


def test_the_graph_sees_the_imports():
    g = _graph()
    assert len(g) > 100
    assert g.has_edge("adderconv.analysis.capture", "adderconv.analysis.registry")        # relative, by name
    assert g.has_edge("adderconv.analysis.registry", "adderconv.op_registry")              # absolute
    assert g.has_edge("adderconv.converters.swap", "adderconv.recipe")
    assert g.has_edge("adderconv.zoo.lenet", "adderconv.layers")                           # `from ..layers`
    assert not g.has_edge("adderconv.converters.views", "adderconv.analysis")              # inside a function
    assert g.edges["adderconv.analysis.dataflow", "adderconv.analysis.zigzag"]["typing"]    # under TYPE_CHECKING
    assert not g.edges["adderconv.analysis.capture", "adderconv.analysis.registry"]["typing"]


def test_no_arrow_from_the_ground_floor_up():
    g = _graph()
    up = [f"{a} -> {b} (line {d['line']})" for a, b, d in g.edges(data=True)
          if _floor(a) == "ground" and _floor(b) == "upper" and not d["typing"]]
    assert up == [], "the ground floor (adderconv/) imports a floor above it:\n" + "\n".join(up)


def test_no_import_cycles():
    cycles = [" -> ".join([*c, c[0]]) for c in nx.simple_cycles(_graph())]
    assert cycles == [], "modules import each other:\n" + "\n".join(cycles)


def test_the_report_views_import_one_way():
    """export -> mermaid -> gate -> schema, and export -> gate: the knot once held by TYPE_CHECKING and a local
    import, untied by the schema's own module."""
    g = _graph()
    views = ("export", "mermaid", "gate", "schema")
    arrows = {(a.rpartition(".")[2], b.rpartition(".")[2]) for a, b in g.edges
              if a.rpartition(".")[2] in views and b.rpartition(".")[2] in views and a.startswith(UPPER[0])}
    assert arrows == {("export", "mermaid"), ("export", "gate"), ("export", "schema"), ("mermaid", "gate"),
                      ("gate", "schema")}
