"""Memory a run needs, estimated before simulating, against what the machine (or a set limit) has.

A run's memory grows with its cells (bars x columns): the engine's output series (8 bytes each)
and, far more, the report (the long ``equity.parquet`` table, the metrics and every plotted line).
Without this check a 10,000-column x 1,416-bar sweep computed for minutes and then died with a
MemoryError while building the report.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# Measured with `backtest run` on the 1h sample (1,392 bars), 400 and 800 columns of a perp and
# 400 of an inverse product: peak RSS minus the RSS after loading grew 1.96 MB per perp column
# (1,410 bytes per cell, engine included) plus 386 MB independent of the size (plotly and the
# page's template). Rounded up so the estimate errs on the side of refusing.
REPORT_BYTES_PER_CELL = 1_500
REPORT_FIXED_BYTES = 400_000_000
# the kernel's output array plus the per-series arrays (and derived series) taken from it
ENGINE_COPIES = 2
ENV = "BACKTEST_MEMORY_LIMIT"
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
OFF = ("off", "none")


def parse_size(value: Any, where: str) -> int | None:
    """Bytes from ``value``: an integer (bytes), or text such as ``"16GB"``, ``"512 MiB"``;
    ``"off"`` gives None (no check). Raises ValueError naming ``where`` and the value."""
    if isinstance(value, bool):
        raise ValueError(f"{where}={value!r} is not a size; give bytes, a size such as '16GB' or 'off'")
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str):
        if value.strip().lower() in OFF:
            return None
        m = _SIZE_RE.match(value)
        if m and m[2].upper() in _UNITS and float(m[1]) > 0:
            return int(float(m[1]) * _UNITS[m[2].upper()])
    raise ValueError(f"{where}={value!r} is not a size; give bytes, a size such as '16GB' or '512MiB', or 'off'")


def fmt_bytes(n: float) -> str:
    """``1.0 MB``, ``23.5 GB``: decimal units, one decimal."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def available_memory(root: str = "/") -> tuple[int | None, str]:
    """Bytes this process can still use, and where the figure comes from; (None, reason) when
    the machine does not say. The smallest of: ``MemAvailable`` of /proc/meminfo, the cgroup's
    limit minus its working set (a container: usage less the reclaimable inactive page cache),
    else ``os.sysconf`` available pages. ``root`` prefixes the /proc and /sys paths (tests)."""
    found: list[tuple[int, str]] = []
    meminfo = _read(os.path.join(root, "proc/meminfo"))
    if meminfo:
        m = re.search(r"^MemAvailable:\s+(\d+)\s*kB", meminfo, re.M)
        if m:
            found.append((int(m[1]) * 1024, "available memory (/proc/meminfo)"))
    for limit_file, usage_file, stat_file, cache_key in (
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat",
             "inactive_file"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
             "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file")):
        limit_file, usage_file, stat_file = (os.path.join(root, f.lstrip("/"))
                                             for f in (limit_file, usage_file, stat_file))
        limit, usage = _read(limit_file), _read(usage_file)
        if limit and usage and limit.strip().isdigit() and usage.strip().isdigit():
            lim = int(limit)
            if lim < 2**60:  # cgroup v1 writes a huge number for "no limit"
                # the usage counts the page cache, which the kernel reclaims before refusing memory:
                # the working set (usage less inactive file pages) is what is really taken
                m = re.search(rf"^{cache_key}\s+(\d+)", _read(stat_file) or "", re.M)
                used = max(int(usage) - (int(m[1]) if m else 0), 0)
                found.append((max(lim - used, 0), f"the container's memory limit ({limit_file})"))
    if not found:
        try:
            found.append((os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "available memory (sysconf)"))
        except (ValueError, OSError, AttributeError):
            return None, "the machine does not report its available memory"
    return min(found)


@dataclass(frozen=True)
class Need:
    """Estimated memory of a run: ``sims`` is [(name, columns, series)]; bytes in each part."""

    bars: int
    sims: tuple[tuple[str, int, int], ...]
    engine: int
    report: int

    @property
    def columns(self) -> int:
        return sum(c for _, c, _ in self.sims)

    @property
    def total(self) -> int:
        return self.engine + self.report


def estimate(bars: int, sims: list[tuple[str, int, int]]) -> Need:
    """The memory a run of ``bars`` bars and ``sims`` [(name, columns, output series)] needs."""
    engine = sum(bars * cols * n_series * 8 * ENGINE_COPIES for _, cols, n_series in sims)
    report = REPORT_FIXED_BYTES + sum(bars * cols * REPORT_BYTES_PER_CELL for _, cols, _ in sims)
    return Need(bars=bars, sims=tuple(sims), engine=engine, report=report)


def limit_for(setting: Any) -> tuple[int | None, str]:
    """The limit in bytes and its source: the config's ``memory_limit``, else ``$BACKTEST_MEMORY_LIMIT``,
    else the machine's available memory; None = no check (``"off"``, or the machine does not say)."""
    if setting is not None:
        return parse_size(setting, "memory_limit"), "memory_limit"
    env = os.environ.get(ENV)
    if env is not None and env.strip():
        return parse_size(env, ENV), ENV
    return available_memory()


def check(need: Need, limit: int | None, source: str, error: Callable[[str], Exception]) -> None:
    """Raise ``error(message)`` when ``need`` exceeds ``limit``: the figure, the limit and the remedies."""
    if limit is None or need.total <= limit:
        return
    parts = ", ".join(f"{name}: {cols} column(s)" for name, cols, _ in need.sims)
    raise error(
        f"this run needs about {fmt_bytes(need.total)} of memory ({need.columns} columns x {need.bars} bars) "
        f"but {source} is {fmt_bytes(limit)}; use fewer columns or bars, or a chunked sweep, or raise "
        f"memory_limit\n"
        f"  estimate: simulation outputs {fmt_bytes(need.engine)} + report {fmt_bytes(need.report)} ({parts})\n"
        f"  remedies: fewer columns (smaller strategy grids, fewer policies or setting values); fewer bars "
        f"(a shorter [data] start..end or a larger timeframe); a chunked sweep (split the grid over several "
        f"runs with parts of the list values); or, if the machine really has the memory, memory_limit = "
        f"\"32GB\" in the config or {ENV}=32GB ('off' skips this check)")


def columns_of(cfg: Any) -> list[tuple[str, int, int]]:
    """[(simulation name, columns, output series)] of a run config, counted from its grids
    without building anything (a grid the simulation would reject counts as 1)."""
    import strategies
    from backtest.engine.enums import SERIES as PERP_SERIES
    from backtest.options.enums import SERIES as PUT_SERIES
    from backtest.options.inputs import column_count
    from backtest.products.enums import SERIES as PRODUCT_SERIES
    from strategies.policies import expand

    def grid(s: Any) -> int:
        if s is None:
            return 1
        try:
            n = len(strategies.get(s.name).grid(s.params or None))
            if s.filter is not None:
                n *= len(strategies.get(s.filter).grid(s.filter_params or None))
        except ValueError:
            return 1
        return n

    def settings(values: dict) -> int:
        try:
            return column_count(dict(values))
        except ValueError:
            return 1

    out = []
    for p in cfg.perp:
        try:
            n_pol = len(expand(list(p.policies)))
        except ValueError:
            n_pol = 1
        out.append((p.name, grid(p.strategy) * n_pol, len(PERP_SERIES)))
    for p in cfg.puts:
        out.append((p.name, max(grid(p.strategy), settings(p.settings)), len(PUT_SERIES)))
    for p in cfg.products:
        out.append((p.name, settings(p.settings), len(PRODUCT_SERIES)))
    return out
