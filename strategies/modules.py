"""A user's own strategy and leverage-policy modules, loaded without editing the project.

A module registers what it defines when it is imported, as the built-in modules do
(``strategies.register(...)``, ``strategies.register_book(...)``,
``@strategies.policies.register_policy``). :func:`load_module` imports one given as a file path
(``my_strategies.py``) or a dotted name importable from ``sys.path`` (``mypkg.policies``), once
per process; a run config names them under ``module`` (docs/runner.md, docs/strategies.md).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from strategies.base import StrategyError

_LOADED: dict[str, ModuleType] = {}  # resolved file path or dotted name -> module, loaded once


def _registered() -> tuple[int, int, int]:
    """Sizes of the three registries (strategies, book strategies, policies)."""
    from strategies.base import names
    from strategies.book import book_names
    from strategies.policies import names as policy_names

    return len(names()), len(book_names()), len(policy_names())


def is_path(ref: str) -> bool:
    """A file reference (``x.py``, or holding a path separator) rather than a dotted module name."""
    return ref.endswith(".py") or "/" in ref or "\\" in ref


def resolve(ref: str, base: str | Path | None = None) -> str:
    """The absolute file path of a file reference (relative to ``base``, default the working
    directory), or the dotted name unchanged."""
    if not is_path(ref):
        return ref
    path = Path(ref).expanduser()
    if not path.is_absolute():
        path = Path(base or ".") / path
    return str(path.resolve())


def load_module(ref: str, base: str | Path | None = None) -> ModuleType:
    """Import a user module that registers strategies or policies, once per process.

    Parameters
    ----------
    ref : a file path (``"my_policies.py"``, ``"lib/strats.py"``; relative to ``base``) or a
        dotted module name (``"mypkg.policies"``, importable from ``sys.path``).
    base : folder a relative file path is relative to (a config's own folder); default the
        working directory.

    Returns
    -------
    The module. Loading the same file (or name) again returns it without running it again, so
    its registrations are not repeated.

    Raises
    ------
    StrategyError
        The file does not exist or is not a ``.py`` file, the name cannot be imported, the
        module fails while it runs (its exception is named), or it registers no strategy, book
        strategy or leverage policy (a module listed under ``module`` must add one).
    """
    if not isinstance(ref, str) or not ref.strip():
        raise StrategyError(f"module {ref!r}: give a Python file ('my_policies.py') or a dotted module name")
    key = resolve(ref.strip(), base)
    if key in _LOADED:
        return _LOADED[key]
    before = _registered()
    if is_path(ref):
        path = Path(key)
        if not path.is_file():
            where = f" (relative to {Path(base or '.').resolve()})" if not Path(ref).is_absolute() else ""
            raise StrategyError(f"module file {path} does not exist{where}; give the path of a Python file "
                                "that registers strategies or policies")
        if path.suffix != ".py":
            raise StrategyError(f"module file {path} is not a Python file (.py); give the .py file that "
                                "registers strategies or policies")
        # a stable name per file, so objects defined there pickle by reference (sweep workers
        # load the same file under the same name)
        name = f"backtest_user_{path.stem}_{hashlib.sha256(key.encode()).hexdigest()[:10]}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a spec
            raise StrategyError(f"module file {path} cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - any failure of the user's code is named
            del sys.modules[name]
            raise StrategyError(f"module file {path} failed while loading: {type(exc).__name__}: {exc}; "
                                "fix the file (run `python " + str(path) + "` to see the traceback)") from None
        what, fresh = str(path), True
    else:
        fresh = key not in sys.modules  # a module imported before registered what it has already
        try:
            module = importlib.import_module(key)
        except ModuleNotFoundError as exc:
            raise StrategyError(f"module {key!r} cannot be imported ({exc}); install it, add its folder to "
                                "PYTHONPATH, or give the path of its .py file") from None
        except Exception as exc:  # noqa: BLE001
            raise StrategyError(f"module {key!r} failed while loading: {type(exc).__name__}: {exc}; fix the "
                                "module") from None
        what = f"module {key!r}"
    if fresh and _registered() == before:
        raise StrategyError(
            f"{what} registers no strategy or leverage policy; register them at import: "
            "strategies.register(name, Params, compute), strategies.register_book(...) or the class "
            "decorator @strategies.policies.register_policy (docs/strategies.md)")
    _LOADED[key] = module
    return module


def loaded() -> dict[str, ModuleType]:
    """The modules loaded so far by :func:`load_module` (resolved reference -> module)."""
    return dict(_LOADED)
