"""A non-editable install (a wheel, as ``pip install .`` builds it) runs from any folder: it finds
the committed sample inside the installed package and keeps its store out of site-packages.

The wheel is built from a copy of the sources without build isolation (the dev extra brings the
backend, so nothing is downloaded) and installed with ``--no-deps --no-index`` into a fresh
virtualenv that sees this environment's dependencies through a ``.pth`` path line (a path line
does not run the editable install's finder, so only the wheel's copy of ``backtest`` exists).
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CONFIG = textwrap.dedent("""
    title = "Installed package check"
    [data]
    exchange = "binanceusdm"
    symbol = "BTC/USDT:USDT"
    timeframe = "1h"
    start = "2023-01-01"
    end = "2023-02-01"

    [[perp]]
    name = "short"
    strategy = { name = "short_hold", params = { rebalance = false } }
    policies = ["const(2)"]
    [perp.account]
    initial_capital = 10000
    margin_mode = "isolated"
    leverage = 10
""")


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)
    assert r.returncode == 0, (cmd, r.stdout[-3000:], r.stderr[-3000:])
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("backtest", "strategies"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BACKTEST_DATA_DIR")}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(tmp / "dist"), str(src)], env=env)
    wheel = next((tmp / "dist").glob("bearish_backtest-*.whl"))

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env=env)
    py = venv / "bin" / "python"
    own = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    env=env).stdout.strip())
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (own / "_test_deps.pth").write_text("".join(f"{p}\n" for p in deps))
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
          str(wheel)], env=env)
    work = tmp / "work"  # outside the repository: nothing can be found through the checkout
    work.mkdir()
    return {"venv": venv, "py": py, "site": own, "work": work, "env": env}


@pytest.mark.slow
def test_the_installed_package_finds_its_sample_and_keeps_its_store_out_of_site_packages(installed):
    code = ("import json, backtest.data.store as s; "
            "print(json.dumps([s.__file__, str(s.SAMPLE_ROOT), str(s.default_root()), s.SAMPLE_ROOT.is_dir()]))")
    out = _run([str(installed["py"]), "-c", code], cwd=installed["work"], env=installed["env"]).stdout
    module, sample, store, exists = json.loads(out)
    site_dir = installed["site"].resolve()
    assert Path(module).is_relative_to(site_dir)  # the wheel's copy, not the checkout
    assert Path(sample) == site_dir / "backtest" / "data" / "sample" and exists
    assert (Path(sample) / "PROVENANCE.md").is_file()
    assert Path(store) == installed["work"] / "data"  # ./data of the working directory
    assert not Path(store).is_relative_to(installed["venv"])


@pytest.mark.slow
def test_backtest_run_from_the_installed_package_outside_the_repository(installed):
    work = installed["work"]
    cfg = work / "check.toml"
    cfg.write_text(CONFIG)
    r = _run([str(installed["venv"] / "bin" / "backtest"), "run", str(cfg), "-o", "reports", "--quiet"],
             cwd=work, env=installed["env"])
    report = Path(r.stdout.strip().splitlines()[-1])
    if not report.is_absolute():
        report = work / report
    assert report.is_file() and report.name == "report.html"
    assert report.parent.parent == (work / "reports").resolve()
    metrics = json.loads((report.parent / "metrics.json").read_text())
    assert metrics, "empty metrics.json"
    assert not (work / "data").exists()  # reading the sample writes nothing into the store
