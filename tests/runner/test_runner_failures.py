"""Failures of `backtest run` / `report` that must be clean: exit 2 (or the signal's code) with
one line naming the file or key and the fix, found before any simulation, and nothing left behind.

Every test runs the real console script in a subprocess on real files.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backtest.runner import budget
from runner_kit import TINY_TOML, tree

TIMEOUT = 180


def backtest_cmd() -> list[str]:
    script = Path(sys.executable).with_name("backtest")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "backtest"]


def env_for(tmp_path: Path, **extra: str) -> dict:
    env = dict(os.environ, BACKTEST_DATA_DIR=str(tmp_path / "empty-store"), **extra)
    env.pop("PYTHONPATH", None)
    env.pop("BACKTEST_MEMORY_LIMIT", None)
    env.update(extra)
    return env


def cli(tmp_path: Path, *args, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*backtest_cmd(), *map(str, args)], capture_output=True, text=True, cwd=tmp_path,
                          env=env_for(tmp_path, **env), timeout=TIMEOUT)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single ``error:`` line of stderr (details after it are indented); no traceback."""
    lines = proc.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "unexpected" not in errors[0], proc.stderr
    after = lines[lines.index(errors[0]) + 1:]
    assert all(line.startswith("  ") for line in after), proc.stderr
    return errors[0]


def write(tmp_path: Path, text: str | bytes, name: str = "run.toml") -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


# ---------------------------------------------------------------------------------------------
# config files that cannot be read

def test_non_utf8_config_names_the_file_line_and_the_fix(tmp_path):
    cfg = write(tmp_path, TINY_TOML.replace('title = "tiny"', 'title = "tiny caf\u00e9"').encode("latin-1"))
    proc = cli(tmp_path, "run", cfg, "-o", tmp_path / "reports")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert str(cfg) in line and "UTF-8" in line and "line 1" in line, line
    assert tree(tmp_path / "reports") == set()


@pytest.mark.parametrize("text", [
    "x = " + "[" * 3000 + "]" * 3000 + "\n",                 # arrays: tomllib recurses per level
    "x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n",        # inline tables
    # parses (dotted keys are not recursive), but far deeper than any config
    '[[perp]]\nname = "x"\n[perp.strategy]\nname = "short_hold"\n[perp.strategy.params' + ".a" * 3000 + "]\nb = 1\n",
])
def test_deeply_nested_toml_exits_2(tmp_path, text):
    cfg = write(tmp_path, text)
    proc = cli(tmp_path, "run", cfg, "-o", tmp_path / "reports")
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert str(cfg) in line and "nested" in line, line


# ---------------------------------------------------------------------------------------------
# the output folder, checked before anything is simulated

def test_reports_dir_that_is_a_file_fails_before_loading(tmp_path):
    cfg = write(tmp_path, TINY_TOML)
    (tmp_path / "afile").write_text("not a folder")
    for target in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        proc = cli(tmp_path, "run", cfg, "-o", target)
        assert proc.returncode == 2, proc.stderr
        line = one_error_line(proc)
        assert str(tmp_path / "afile") in line and "not a folder" in line, line
        assert "loading" not in proc.stderr and "simulating" not in proc.stderr
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_reports_dir_with_a_missing_parent_fails_before_loading(tmp_path):
    cfg = write(tmp_path, TINY_TOML)
    proc = cli(tmp_path, "run", cfg, "-o", tmp_path / "no-such" / "reports")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert str(tmp_path / "no-such") in line and "does not exist" in line, line
    assert "loading" not in proc.stderr
    assert not (tmp_path / "no-such").exists()


def test_run_folder_taken_by_a_file_fails_before_simulating(tmp_path):
    """The run id is known once the data is loaded: a file of that name fails then, not after
    the simulation."""
    cfg = write(tmp_path, TINY_TOML)
    first = cli(tmp_path, "run", cfg, "-o", tmp_path / "reports", "-q")
    assert first.returncode == 0, first.stderr
    run_dir = Path(first.stdout.strip()).parent
    import shutil
    shutil.rmtree(run_dir)
    run_dir.write_text("in the way")
    proc = cli(tmp_path, "run", cfg, "-o", tmp_path / "reports")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert str(run_dir) in line and "not a folder" in line, line
    assert "simulating" not in proc.stderr
    assert run_dir.read_text() == "in the way"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_reports_dir_fails_before_loading(tmp_path):
    cfg = write(tmp_path, TINY_TOML)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        proc = cli(tmp_path, "run", cfg, "-o", ro)
    finally:
        ro.chmod(0o755)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert str(ro) in line and "not writable" in line, line
    assert "loading" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# `backtest report` on a folder that is not a complete report

@pytest.fixture(scope="module")
def stored_report(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("stored")
    cfg = write(base, TINY_TOML)
    proc = cli(base, "run", cfg, "-o", base / "reports", "-q")
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip()).parent


def copy_report(src: Path, tmp_path: Path) -> Path:
    import shutil
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("drop", [("comparison",), ("results",), ("title",), ("results", "trend", "settle")])
def test_report_of_an_incomplete_metrics_json_exits_2(stored_report, tmp_path, drop):
    run_dir = copy_report(stored_report, tmp_path)
    path = run_dir / "metrics.json"
    doc = json.loads(path.read_text())
    node = doc
    for key in drop[:-1]:
        node = node[key]
    del node[drop[-1]]
    path.write_text(json.dumps(doc))
    page = (run_dir / "report.html").read_bytes()
    proc = cli(tmp_path, "report", run_dir)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert str(path) in line and repr(drop[-1]) in line and "backtest run" in line, line
    assert (run_dir / "report.html").read_bytes() == page
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(p.name for p in stored_report.iterdir())


def test_report_of_a_corrupt_metrics_json_exits_2(stored_report, tmp_path):
    run_dir = copy_report(stored_report, tmp_path)
    (run_dir / "metrics.json").write_text('{"schema_version": 1, "results": {')
    proc = cli(tmp_path, "report", run_dir)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert str(run_dir / "metrics.json") in line and "not valid JSON" in line, line


# ---------------------------------------------------------------------------------------------
# memory: estimated before simulating, refused with the figure and the remedies

MEM_RE = re.compile(r"needs about ([\d.]+) ([KMGT]B)")


@pytest.mark.parametrize("how", ["env", "config"])
def test_memory_need_beyond_the_limit_is_refused_before_simulating(tmp_path, how):
    text, env = TINY_TOML, {}
    if how == "env":
        env["BACKTEST_MEMORY_LIMIT"] = "1MB"
    else:
        text = text.replace('title = "tiny"', 'title = "tiny"\nmemory_limit = "1MB"')
    proc = cli(tmp_path, "run", write(tmp_path, text), "-o", tmp_path / "reports", **env)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert "4 columns x 354 bars" in line and "1.0 MB" in line and "memory_limit" in line, line
    assert MEM_RE.search(line), line
    assert "fewer columns" in proc.stderr and "chunk" in proc.stderr
    assert "simulating" not in proc.stderr
    assert tree(tmp_path / "reports") == set()


def test_memory_estimate_grows_with_columns_and_bars_and_a_generous_limit_runs(tmp_path):
    small = cli(tmp_path, "run", write(tmp_path, TINY_TOML), "-o", tmp_path / "r", BACKTEST_MEMORY_LIMIT="1KB")
    big_text = TINY_TOML.replace("[10, 20]", "[10, 20, 30, 40]").replace('timeframe = "4h"', 'timeframe = "1h"')
    big = cli(tmp_path, "run", write(tmp_path, big_text, "big.toml"), "-o", tmp_path / "r",
              BACKTEST_MEMORY_LIMIT="1KB")
    assert small.returncode == big.returncode == 2
    units = {"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}

    def need(proc):
        value, unit = MEM_RE.search(proc.stderr).groups()
        return float(value) * units[unit]

    assert "8 columns x 1416 bars" in big.stderr
    assert need(big) > need(small)
    ok = cli(tmp_path, "run", write(tmp_path, TINY_TOML), "-o", tmp_path / "r", "-q",
             BACKTEST_MEMORY_LIMIT="64GB")
    assert ok.returncode == 0, ok.stderr


def test_bad_memory_limit_is_an_input_error(tmp_path):
    proc = cli(tmp_path, "run", write(tmp_path, TINY_TOML), "-o", tmp_path / "r", BACKTEST_MEMORY_LIMIT="lots")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "BACKTEST_MEMORY_LIMIT" in line and "'lots'" in line, line


# ---------------------------------------------------------------------------------------------
# signals: SIGTERM and Ctrl-C clean up; after SIGKILL the next run removes its stale folders

def _ctrl_c_as_at_a_terminal() -> None:
    # a shell without job control starts background commands (a CI script run with &) with
    # SIGINT ignored, and a child inherits that: give the run the disposition a terminal gives it
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(tmp_path: Path, cfg: Path, reports: Path) -> subprocess.Popen:
    return subprocess.Popen([*backtest_cmd(), "run", str(cfg), "-o", str(reports)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env_for(tmp_path),
                            preexec_fn=_ctrl_c_as_at_a_terminal)


def signal_at(proc: subprocess.Popen, stage: str, sig: int) -> tuple[int, str]:
    """Send ``sig`` as soon as stderr shows the line starting with ``stage``; (exit code, stderr)."""
    seen = []
    deadline = time.monotonic() + TIMEOUT
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(stage):
            proc.send_signal(sig)
            break
        assert time.monotonic() < deadline
    else:
        raise AssertionError(f"never reached {stage!r}: {''.join(seen)}")
    rest = proc.stderr.read()
    proc.wait(timeout=TIMEOUT)
    proc.stdout.close()
    proc.stderr.close()
    return proc.returncode, "".join(seen) + rest


# many columns, so that writing the report lasts long enough for the signal to land in it
WIDE = TINY_TOML.replace("[10, 20]", "[5, 10, 15, 20, 25, 30, 35, 40]").replace(
    '["const(1)", "const(2)"]', '[{ name = "const", leverage = [0.5, 1, 1.5, 2, 2.5, 3] }]')


def test_sigterm_while_writing_the_report_cleans_up(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / ".keep-me").mkdir()  # someone else's hidden folder
    code, err = signal_at(start(tmp_path, write(tmp_path, WIDE), reports), "writing report", signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err
    assert err.splitlines()[-1].startswith("error: terminated (SIGTERM)"), err
    assert "Traceback" not in err
    assert tree(reports) == {".keep-me"}


@pytest.mark.parametrize("stage", ["simulating", "writing report"])
def test_ctrl_c_prints_one_line_and_exits_130(tmp_path, stage):
    reports = tmp_path / "reports"
    code, err = signal_at(start(tmp_path, write(tmp_path, WIDE), reports), stage, signal.SIGINT)
    assert code == 130, err
    assert err.splitlines()[-1].startswith("error: interrupted (Ctrl-C)"), err
    assert "Traceback" not in err and "Aborted" not in err
    assert tree(reports) == set()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_next_run_removes_stale_temporary_folders_of_its_own_only(tmp_path):
    import socket

    reports = tmp_path / "reports"
    cfg = write(tmp_path, WIDE)
    code, err = signal_at(start(tmp_path, cfg, reports), "writing report", signal.SIGKILL)
    assert code == -signal.SIGKILL, err
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())
    gone = pid = dead_pid()
    hexes = "0123456789abcdef" * 2
    # left by a killed run of this host (dead pid): removed by the next run
    stale = [f".other-run-0123456789ab.tmp-{gone}-{hexes}@{host}", f".x.staging-{gone}-{hexes}@{host}"]
    # a live process's (this test's), another host's, and names that are not ours: kept
    kept = [f".other-run-0123456789ab.tmp-{os.getpid()}-{hexes}@{host}",
            f".other-run-0123456789ab.tmp-{pid}-{hexes}@another-host",
            ".other-run.tmp-notours", "my-notes.tmp-1-x", ".cache", f".y.tmp-{hexes}"]
    # the unowned names of earlier versions: removed once a day old
    stale.append(f".z.tmp-{hexes}")
    for name in stale + kept:
        (reports / name).mkdir(parents=True)
        (reports / name / "f").write_text("x")
    day_ago = time.time() - 86_400 - 60
    os.utime(reports / f".z.tmp-{hexes}", (day_ago, day_ago))
    proc = cli(tmp_path, "run", cfg, "-o", reports, "-q")
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip()).parent
    hidden = {p.name for p in reports.iterdir() if p.name != run_dir.name}
    assert hidden == set(kept)
    assert all((reports / name / "f").read_text() == "x" for name in kept)


@pytest.mark.parametrize("version", [2, 1])
def test_a_container_s_page_cache_is_not_counted_as_taken(tmp_path, version):
    # a cgroup at 7.9 of its 8 GB, 6 GB of it inactive page cache the kernel reclaims first:
    # about 6.1 GB can still be had, not 0.1 GB (the limit, not the host's 64 GB, is the bound)
    gb = 10**9
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text(f"MemTotal: {64 * gb // 1024} kB\nMemAvailable: {60 * gb // 1024} kB\n")
    cg = tmp_path / "sys" / "fs" / "cgroup" / ("" if version == 2 else "memory")
    cg.mkdir(parents=True)
    files = (("memory.max", "memory.current", "inactive_file") if version == 2 else
             ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"))
    (cg / files[0]).write_text(f"{8 * gb}\n")
    (cg / files[1]).write_text(f"{79 * gb // 10}\n")
    (cg / "memory.stat").write_text(f"anon 1900000000\n{files[2]} {6 * gb}\nactive_file 1\n")
    free, source = budget.available_memory(str(tmp_path))
    assert free == 8 * gb - (79 * gb // 10 - 6 * gb) and "container" in source
