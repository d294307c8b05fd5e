"""Every docstring example in the package runs, imported by its installed name (``adderconv.analysis.energy``,
not ``analysis.energy``: a checkout's top-level folders are not second packages)."""
import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ("adderconv", "adderconv.analysis", "adderconv.converters")
# Modules that run as scripts or need what CI lacks; said here with the reason, never skipped silently.
NOT_IMPORTED = {
    "adderconv.__main__": "runs the CLI when imported",
    "adderconv.kernels.triton_kernels": "needs triton's GPU compiler at import (its tests use TRITON_INTERPRET)",
}


def _modules() -> list[str]:
    names = ["adderconv.cli"]
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        names.append(pkg)
        names += [m.name for m in pkgutil.walk_packages(mod.__path__, pkg + ".")]
    return sorted(n for n in dict.fromkeys(names) if n not in NOT_IMPORTED)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_package_has_examples():
    finder = doctest.DocTestFinder()
    examples = sum(len(t.examples) for n in _modules() for t in finder.find(importlib.import_module(n)))
    assert examples >= 50, examples
