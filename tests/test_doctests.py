"""Every docstring example (``>>>``) in the exporter package, and in the test helpers, runs as a test.

Why a module rather than ``--doctest-modules``: pytest imports a module it collects that way by its
path, and ``exporter/web/`` is a namespace package (no ``__init__.py``), so its modules fail to import
as ``web.server`` with relative imports. Here each module is imported by its dotted name, as the
exporter imports it, and doctest runs on it; one test per module, so a failure names the module and
prints doctest's own report. Importing every module also catches a module that no longer imports.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def modules() -> list[str]:
    """Every module of the exporter package; of tests/, the helper modules that hold an example.
    ``__main__`` modules are left out (as pytest's doctest plugin does): importing one runs the program."""
    paths = list((ROOT / "exporter").rglob("*.py"))
    paths += [p for p in (ROOT / "tests").rglob("*.py") if not p.name.startswith("test_") and ">>>" in p.read_text()]
    names = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in sorted(paths) if p.name != "__main__.py"]
    return [n.removesuffix(".__init__") for n in names]


MODULES = modules()


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for test in finder.find(module, name):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed\n" + "".join(report)


def test_the_examples_are_found() -> None:
    """Guards the test above against running nothing (a finder that sees no module passes vacuously)."""
    found = {}
    for name in MODULES:
        tests = doctest.DocTestFinder().find(importlib.import_module(name), name)
        found[name] = sum(len(t.examples) for t in tests)
    assert "exporter.web.server" in found and "exporter.sources.netlink_wire" in found
    assert found["exporter.model.kinds"] > 0 and found["tests._promql"] > 0
    assert sum(found.values()) >= 10, found
