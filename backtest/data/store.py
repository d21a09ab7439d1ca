"""The Parquet data store: layout, schema, atomic writes and merges.

Layout under a root folder (see :func:`default_root` for where it is by default)::

    <root>/<exchange-id>/<symbol-dir>/ohlcv-<timeframe>.parquet   trade-price candles
    <root>/<exchange-id>/<symbol-dir>/mark-<timeframe>.parquet    mark-price candles
    <root>/<exchange-id>/<symbol-dir>/index-<timeframe>.parquet   index-price candles
    <root>/<exchange-id>/<symbol-dir>/funding.parquet             funding prints
    <root>/markets/<exchange-id>.json                             market snapshot

``symbol-dir`` is the ccxt symbol with ``/`` and ``:`` replaced by ``_``
(``BTC/USDT:USDT`` -> ``BTC_USDT_USDT``); the real symbol is kept in the file's Parquet
key-value metadata (key ``symbol``), with ``exchange``, ``kind``, ``timeframe`` and the
verified range ``covered_from``/``covered_to`` (ms, see :mod:`backtest.data.download`).

Every write goes to a temporary file in the same folder, is fsynced and then renamed over
the target with :func:`os.replace`, so a crash at any point leaves either the old or the new
file, never a torn one. The file gets the permissions a plain ``open()`` gives (``0o666``
less the process umask), like every other output.

The committed sample is package data (``backtest/data/sample/``, :data:`SAMPLE_ROOT`), so an
installed package (``pip install .``, a wheel) finds it wherever it lives; in a source checkout
``data/sample`` is a link to the same folder.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from backtest.data.timeutil import iso, parse_timeframe
from backtest.exits import DISK_FULL, ENV_ERRNOS

# The committed sample ships inside the package (package data), so it is found in a checkout,
# an editable install and a wheel alike; nothing may assume the repository layout.
SAMPLE_ROOT = Path(__file__).resolve().parent / "sample"
# The folder above the package: the source checkout when the package runs from one (editable
# install, tests); for an installed package it is site-packages itself, never used as a store.
REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_ROOT = "BACKTEST_DATA_DIR"

CANDLE_KINDS = ("ohlcv", "mark", "index")
KINDS = CANDLE_KINDS + ("funding",)
PRICE_COLUMNS = ("open", "high", "low", "close")
FUNDING_COLUMNS = ("funding_rate", "interval_hours", "mark_price")

_EXCHANGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class StoreError(ValueError):
    """A store path, dataset or schema is invalid; the message names it and the fix."""


def source_checkout() -> Path | None:
    """The source checkout the package runs from (its ``pyproject.toml`` sits next to the
    ``backtest`` package), or None for an installed package (site-packages, a wheel)."""
    here = Path(__file__).resolve()
    if (REPO_ROOT / "pyproject.toml").is_file() and here == REPO_ROOT / "backtest" / "data" / "store.py":
        return REPO_ROOT
    return None


def default_root() -> Path:
    """The default store root (where ``backtest download`` writes and the loader looks first).

    In order: ``$BACKTEST_DATA_DIR`` if set; ``<checkout>/data`` when the package runs from a
    source checkout (what ``make demo`` uses, whatever the working directory); else ``data``
    in the current working directory (an installed package never writes into site-packages).
    """
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env).expanduser()
    checkout = source_checkout()
    return checkout / "data" if checkout is not None else Path.cwd() / "data"


def symbol_dir(symbol: str) -> str:
    """Folder name of a ccxt symbol: ``/`` and ``:`` become ``_`` (``BTC/USD:BTC`` -> ``BTC_USD_BTC``)."""
    name = str(symbol).replace("/", "_").replace(":", "_")
    if not name or name in (".", "..") or "\\" in name or name.startswith("."):
        raise StoreError(f"symbol {symbol!r} cannot be used as a store folder name")
    return name


def _check_exchange(exchange: str) -> str:
    if not _EXCHANGE_RE.match(str(exchange)) or exchange == "markets":
        raise StoreError(f"exchange id {exchange!r} is not a valid ccxt exchange id (e.g. 'binanceusdm')")
    return str(exchange)


def _check_kind(kind: str, timeframe: str | None) -> None:
    if kind not in KINDS:
        raise StoreError(f"dataset kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
    if kind == "funding":
        if timeframe is not None:
            raise StoreError("funding has no timeframe; pass timeframe=None")
    else:
        if timeframe is None:
            raise StoreError(f"kind {kind!r} needs a timeframe (e.g. '1h')")
        parse_timeframe(timeframe)


def file_name(kind: str, timeframe: str | None = None) -> str:
    """``ohlcv-1h.parquet``, ``mark-1h.parquet``, ``index-1d.parquet`` or ``funding.parquet``."""
    _check_kind(kind, timeframe)
    return "funding.parquet" if kind == "funding" else f"{kind}-{timeframe}.parquet"


# ---------------------------------------------------------------------------------------------
# schema


def empty_frame(kind: str) -> pd.DataFrame:
    """A zero-row frame with the kind's columns and dtypes."""
    cols = ["timestamp"] + (list(FUNDING_COLUMNS) if kind == "funding" else list(PRICE_COLUMNS) + ["volume"])
    out = pd.DataFrame({c: np.empty(0, dtype=np.int64 if c == "timestamp" else np.float64) for c in cols})
    if kind in ("mark", "index"):
        out = out.drop(columns="volume")
    return out


def kind_columns(kind: str) -> tuple[list[str], list[str]]:
    """(required, optional) columns of a dataset kind, in the store's order."""
    if kind == "funding":
        return ["timestamp", "funding_rate"], ["interval_hours", "mark_price"]
    required = ["timestamp", *PRICE_COLUMNS] + (["volume"] if kind == "ohlcv" else [])
    return required, ([] if kind == "ohlcv" else ["volume"])


def conform(df: pd.DataFrame, kind: str, *, where: str = "frame") -> pd.DataFrame:
    """Return ``df`` with exactly the kind's columns in order and the store's dtypes.

    Candles: ``timestamp`` int64 ms, float64 ``open high low close`` and ``volume`` (optional
    for mark/index). Funding: ``timestamp`` int64 ms, float64 ``funding_rate``,
    ``interval_hours``, ``mark_price`` (NaN when unknown).

    Raises
    ------
    StoreError
        On a missing or unknown column, or a null timestamp.
    """
    required, optional = kind_columns(kind)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise StoreError(f"{where}: missing column(s) {missing} for kind {kind!r}; expected {required + optional}")
    extra = [c for c in df.columns if c not in required + optional]
    if extra:
        raise StoreError(f"{where}: unexpected column(s) {extra} for kind {kind!r}; expected {required + optional}")
    ts = df["timestamp"]
    if ts.isna().any():
        raise StoreError(f"{where}: column 'timestamp' has nulls; every row needs a ms timestamp")
    out = pd.DataFrame({"timestamp": ts.to_numpy(dtype=np.int64)})
    for c in required[1:] + optional:
        if c in df.columns:
            out[c] = pd.to_numeric(df[c], errors="raise").to_numpy(dtype=np.float64)
        elif kind == "funding":
            out[c] = np.nan
    return out


def merge_rows(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Union of two conformed frames sorted by timestamp; on equal timestamps the new row wins."""
    if len(old) and len(new) and list(old.columns) == list(new.columns):
        t_new = new["timestamp"].to_numpy()
        if t_new[0] > old["timestamp"].iloc[-1] and (t_new.size < 2 or (np.diff(t_new) > 0).all()) \
                and old["timestamp"].is_monotonic_increasing:
            # plain append, the downloader's usual case: skip the O(n log n) de-duplication
            return pd.concat([old, new], ignore_index=True)
    if len(old) == 0:
        merged = new
    elif len(new) == 0:
        merged = old
    else:
        if list(old.columns) != list(new.columns):
            # mark/index files may or may not carry volume; keep the union, NaN where absent
            cols = list(dict.fromkeys(list(old.columns) + list(new.columns)))
            old, new = old.reindex(columns=cols), new.reindex(columns=cols)
        merged = pd.concat([old, new], ignore_index=True)
    merged = merged.drop_duplicates("timestamp", keep="last")
    return merged.sort_values("timestamp", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# atomic writes


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a directory; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_temp(folder: Path, prefix: str) -> Path:
    """Create an empty file with a fresh random name in ``folder`` and return its path.

    Opened with mode ``0o666`` so the kernel applies the process umask, as for any ``open()``
    (``tempfile.mkstemp`` would force ``0o600``, leaving store files unreadable by the group).
    """
    for _ in range(100):
        tmp = folder / f"{prefix}{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, f"no free temporary file name in {folder}")  # pragma: no cover


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` atomically: ``write(tmp)`` into a temporary file in the same folder,
    fsync it, then :func:`os.replace` it over ``path``. On any error the temporary file is
    removed and ``path`` is untouched. The file's mode is ``0o666`` less the process umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(path.parent, f".{path.name}.")
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


class StoreWriteError(OSError):
    """A store file or folder cannot be written; the message is one line naming it, the cause
    and the fix. ``setting`` is True when the cause is the user's choice of folder (read-only,
    not permitted, a file in the way) and False when it is the machine's state (a full disk,
    an I/O error)."""

    def __init__(self, message: str, *, setting: bool) -> None:
        super().__init__(message)
        self.setting = setting

    def __str__(self) -> str:
        return str(self.args[0])


def write_problem(exc: OSError, target: Path) -> StoreWriteError:
    """The :class:`StoreWriteError` for an ``OSError`` raised while writing ``target``."""
    if isinstance(exc, StoreWriteError):
        return exc
    code = getattr(exc, "errno", None)
    why = exc.strerror or str(exc)
    other = f"or choose another store folder with --data-dir or ${ENV_ROOT}"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreWriteError(f"cannot write {target}: {why}; make the folder writable, {other}", setting=True)
    if code in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return StoreWriteError(f"cannot write {target}: {why} (a file is in the way of a folder); remove it, "
                               f"{other}", setting=True)
    if code in DISK_FULL:
        # the environment's, like a read-only folder: exit 2 (backtest.exits)
        return StoreWriteError(f"cannot write {target}: {why}; {ENV_ERRNOS[code]} and run the same command "
                               "again: it resumes after the last stored page", setting=True)
    return StoreWriteError(f"cannot write {target}: {why}; check the folder and run again", setting=False)


def check_writable(root: Path) -> list[Path]:
    """Create the store folder ``root`` if needed and prove a file can be created in it (the
    probe file is removed again), so a bad folder fails before any work.

    Returns
    -------
    list of Path
        The folders this call created, deepest first: :func:`remove_empty_folders` takes them
        away again if the work fails before writing anything into them.

    Raises
    ------
    StoreWriteError
        Naming the folder, the cause and the fix (``--data-dir`` / ``$BACKTEST_DATA_DIR``).
    """
    root = Path(root)
    created, p = [], root
    while not p.exists() and not p.is_symlink() and p != p.parent:
        created.append(p)
        p = p.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        _new_temp(root, ".write-check.").unlink()
    except OSError as exc:
        remove_empty_folders(created)
        raise write_problem(exc, root) from exc
    return created


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty; stop at the first that is not."""
    for f in folders:
        try:
            f.rmdir()
        except OSError:
            return


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically replace a text file (UTF-8)."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# the store


@dataclass(frozen=True)
class DatasetInfo:
    """What a stored dataset holds (from its footer, without reading the rows)."""

    path: Path
    exchange: str
    symbol: str
    kind: str
    timeframe: str | None
    rows: int
    first: int | None
    last: int | None
    covered_from: int | None
    covered_to: int | None

    def describe(self) -> str:
        tf = f" {self.timeframe}" if self.timeframe else ""
        return f"{self.exchange} {self.symbol} {self.kind}{tf}: {self.rows} rows {iso(self.first)} .. {iso(self.last)}"


class Store:
    """A Parquet store rooted at ``root`` (default :func:`default_root`).

    The committed sample is a store too: ``Store(SAMPLE_ROOT)``.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # paths ------------------------------------------------------------------------------------
    def symbol_path(self, exchange: str, symbol: str) -> Path:
        return self.root / _check_exchange(exchange) / symbol_dir(symbol)

    def path(self, exchange: str, symbol: str, kind: str, timeframe: str | None = None) -> Path:
        """Path of one dataset (it need not exist)."""
        return self.symbol_path(exchange, symbol) / file_name(kind, timeframe)

    def markets_path(self, exchange: str) -> Path:
        return self.root / "markets" / f"{_check_exchange(exchange)}.json"

    def exists(self, exchange: str, symbol: str, kind: str, timeframe: str | None = None) -> bool:
        return self.path(exchange, symbol, kind, timeframe).is_file()

    def timeframes(self, exchange: str, symbol: str, kind: str) -> list[str]:
        """Timeframes stored for a candle kind, finest first."""
        if kind not in CANDLE_KINDS:
            raise StoreError(f"kind {kind!r} has no timeframes; use one of {', '.join(CANDLE_KINDS)}")
        folder = self.symbol_path(exchange, symbol)
        out = []
        for p in folder.glob(f"{kind}-*.parquet"):
            tf = p.stem[len(kind) + 1:]
            try:
                out.append((parse_timeframe(tf), tf))
            except ValueError:
                continue
        return [tf for _, tf in sorted(out)]

    # reading ----------------------------------------------------------------------------------
    def read(self, exchange: str, symbol: str, kind: str, timeframe: str | None = None) -> pd.DataFrame:
        """Read a dataset as a conformed frame (sorted as stored; validation is separate).

        Raises
        ------
        FileNotFoundError
            Naming the missing file and the download command that creates it.
        """
        path = self.path(exchange, symbol, kind, timeframe)
        if not path.is_file():
            tf = f" -t {timeframe}" if timeframe else ""
            raise FileNotFoundError(
                f"{path}: no such dataset; run `backtest download -e {exchange} -s {symbol} -k {kind}{tf}`")
        return read_file(path, kind)

    def meta(self, exchange: str, symbol: str, kind: str, timeframe: str | None = None) -> dict[str, str]:
        """The dataset's key-value metadata (empty dict if absent or the file does not exist)."""
        path = self.path(exchange, symbol, kind, timeframe)
        return read_meta(path) if path.is_file() else {}

    def info(self, exchange: str, symbol: str, kind: str, timeframe: str | None = None) -> DatasetInfo | None:
        path = self.path(exchange, symbol, kind, timeframe)
        if not path.is_file():
            return None
        return dataset_info(path, exchange=exchange, symbol=symbol, kind=kind, timeframe=timeframe)

    def datasets(self) -> list[DatasetInfo]:
        """Every dataset under the root."""
        out: list[DatasetInfo] = []
        if not self.root.is_dir():
            return out
        for path in sorted(self.root.glob("*/*/*.parquet")):
            exchange, sdir = path.parent.parent.name, path.parent.name
            stem = path.stem
            kind, _, tf = stem.partition("-")
            if kind not in KINDS:
                continue
            meta = read_meta(path)
            out.append(dataset_info(path, exchange=exchange, symbol=meta.get("symbol", sdir), kind=kind,
                                    timeframe=tf or None))
        return out

    def read_markets(self, exchange: str) -> dict[str, Any] | None:
        path = self.markets_path(exchange)
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    # writing ----------------------------------------------------------------------------------
    def write(self, df: pd.DataFrame, exchange: str, symbol: str, kind: str, timeframe: str | None = None,
              *, meta: dict[str, Any] | None = None) -> Path:
        """Replace a dataset atomically with ``df`` (conformed, de-duplicated, sorted)."""
        path = self.path(exchange, symbol, kind, timeframe)
        frame = conform(df, kind, where=str(path))
        frame = merge_rows(frame.iloc[:0], frame)
        write_file(path, frame, self._meta(exchange, symbol, kind, timeframe, meta))
        return path

    def append(self, df: pd.DataFrame, exchange: str, symbol: str, kind: str, timeframe: str | None = None,
               *, meta: dict[str, Any] | None = None) -> Path:
        """Merge ``df`` into a dataset atomically: union by timestamp (new rows win on equal
        timestamps), sorted. ``meta`` entries update the stored metadata; others are kept."""
        path = self.path(exchange, symbol, kind, timeframe)
        new = conform(df, kind, where=str(path))
        if path.is_file():
            old = read_file(path, kind)
            stored = read_meta(path)
        else:
            old, stored = empty_frame(kind), {}
        merged = merge_rows(old, new)
        write_file(path, merged, {**stored, **self._meta(exchange, symbol, kind, timeframe, meta)})
        return path

    def write_markets(self, exchange: str, doc: dict[str, Any]) -> Path:
        path = self.markets_path(exchange)
        try:
            atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=False) + "\n")
        except OSError as exc:
            raise write_problem(exc, path) from exc
        return path

    @staticmethod
    def _meta(exchange: str, symbol: str, kind: str, timeframe: str | None,
              extra: dict[str, Any] | None) -> dict[str, str]:
        out = {"exchange": exchange, "symbol": symbol, "kind": kind}
        if timeframe is not None:
            out["timeframe"] = timeframe
        for k, v in (extra or {}).items():
            if v is not None:
                out[k] = str(v)
        return out


def read_file(path: Path, kind: str) -> pd.DataFrame:
    """Read one store file into a conformed frame."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(f"{path}: not a readable Parquet file ({exc}); delete it and download again") from exc
    return conform(table.to_pandas(), kind, where=str(path))


def read_meta(path: Path) -> dict[str, str]:
    """Key-value metadata of a store file, without the pandas block."""
    md = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in md.items() if k != b"pandas"}


def write_file(path: Path, frame: pd.DataFrame, meta: dict[str, str]) -> None:
    """Atomically write a conformed frame with key-value metadata."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    md = dict(table.schema.metadata or {})
    md.update({k.encode(): str(v).encode() for k, v in meta.items()})
    table = table.replace_schema_metadata(md)
    try:
        atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
    except OSError as exc:  # pyarrow's IO errors are OSErrors too
        raise write_problem(exc, path) from exc


def dataset_info(path: Path, *, exchange: str, symbol: str, kind: str, timeframe: str | None) -> DatasetInfo:
    pf = pq.ParquetFile(path)
    meta = read_meta(path)
    rows = pf.metadata.num_rows
    first = last = None
    if rows:
        ts = pf.read(columns=["timestamp"]).column(0).to_numpy()
        first, last = int(ts.min()), int(ts.max())
    cf, ct = meta.get("covered_from"), meta.get("covered_to")
    return DatasetInfo(path=path, exchange=exchange, symbol=meta.get("symbol", symbol), kind=kind,
                       timeframe=timeframe, rows=rows, first=first, last=last,
                       covered_from=int(cf) if cf else None, covered_to=int(ct) if ct else None)
