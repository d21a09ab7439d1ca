"""A perp sweep's start-up imports: importing the sweep's modules imports neither the option and
book kernels nor (through numba's ``vectorize`` in the option kernel) ``scipy.linalg``, and the
lazy packages still give every public name (issue 17, start-up). numba itself imports
``scipy.linalg`` later, when it loads its first cached kernel: benchmarks/README.md "Sweeps"."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Modules a perp sweep never calls: the put kernel (0.5-0.8 s with the scipy it pulls in) and the
# book engine.
NOT_NEEDED = ("backtest.options.nb", "backtest.options.pricing", "scipy.linalg", "backtest.book.core",
              "backtest.book.nb", "backtest.book.reference")


def _modules_after(code: str) -> set[str]:
    """The modules loaded in a fresh interpreter after running ``code``."""
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_sweep_command_and_its_modules_import_no_option_or_book_kernel():
    loaded = _modules_after("import backtest.cli, backtest.runner.cli, backtest.runner.sweep, backtest.runner.chunks, "
                            "backtest.runner.executors, backtest.metrics\n"
                            "from backtest.runner import parse_config")
    assert "backtest.runner.config" in loaded  # the sweep's config models were built ...
    assert "backtest.options.sim" in loaded  # ... from PutSettings' fields
    assert sorted(loaded.intersection(NOT_NEEDED)) == []


@pytest.mark.parametrize("package", ["backtest.options", "backtest.book"])
def test_a_lazy_package_gives_every_public_name_from_its_module(package):
    import importlib

    pkg = importlib.import_module(package)
    assert sorted(pkg.__all__) == sorted(pkg._WHERE)
    for name in pkg.__all__:
        value = getattr(pkg, name)
        assert value is getattr(importlib.import_module(pkg._WHERE[name]), name)
    assert set(pkg.__all__) <= set(dir(pkg))
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        pkg.not_a_name  # noqa: B018
