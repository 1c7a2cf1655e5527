"""Where the offline dataset files live.

:func:`resolve_data_root` finds the folder laid out like ``../shared/datasets`` (one sub-folder per
dataset: ``mnist/``, ``fashion-mnist/``, ``cifar10-jpeg/`` or ``cifar10/``, ``adult/``, ``location/``,
``letter/``). The search order is:

1. the ``data-dir`` config value, if non-empty (a relative path is taken relative to the current
   directory, then to the project root);
2. the ``FEDFORGET_DATA`` environment variable, if non-empty;
3. the default places: ``<project root>/../shared/datasets``, ``<cwd>/../shared/datasets`` and
   ``<cwd>/shared/datasets`` (the project root is the folder that holds the ``fedforget`` package).

An explicit setting (1 or 2) is authoritative: when it is set but unusable the search stops there
rather than silently reading some other copy. When nothing fits, :class:`DataError` names every
place searched, why each one failed, and how to get the files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from fedforget.data.base import DataError

ENV_VAR = "FEDFORGET_DATA"
CACHE_ENV_VAR = "FEDFORGET_CACHE"
PROJECT_ROOT = Path(__file__).resolve().parents[2]

HOW_TO_GET = (
    "To fix: set the 'data-dir' config value (e.g. --run-config \"data-dir='/path/to/datasets'\") or the "
    f"{ENV_VAR} environment variable to a folder laid out like ../shared/datasets (see its README.md), "
    "or, on a machine with internet, run `python -m fedforget.data.download NAME --to DIR` "
    "(NAME in mnist, fashion-mnist, cifar10) and point data-dir at DIR."
)


def default_roots() -> list[Path]:
    """The default places searched when neither ``data-dir`` nor ``FEDFORGET_DATA`` is set."""
    cwd = Path.cwd()
    candidates = [PROJECT_ROOT.parent / "shared" / "datasets", cwd.parent / "shared" / "datasets"]
    candidates.append(cwd / "shared" / "datasets")
    return _unique(candidates)


def cache_dir() -> Path:
    """Where decoded arrays are cached: ``$FEDFORGET_CACHE`` or ``~/.cache/fedforget``."""
    value = os.environ.get(CACHE_ENV_VAR, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "fedforget"


def resolve_data_root(
    data_dir: str | os.PathLike[str] | None = None, require: str | Sequence[str] | None = None
) -> Path:
    """Return the dataset root folder (absolute).

    ``require`` names the sub-folder(s) or file(s) a dataset needs (any one of them suffices); a
    root that exists but lacks all of them does not count. Raises :class:`DataError` naming every
    place searched and why each failed.
    """
    needed = [require] if isinstance(require, str) else list(require or [])
    what = " or ".join(f"'{n}'" for n in needed)
    tried: list[str] = []

    def check(label: str, candidates: list[Path]) -> Path | None:
        for path in candidates:
            if not path.is_dir():
                reason = "is not a folder" if path.exists() else "does not exist"
                tried.append(f"{label} {path}: {reason}")
            elif needed and not any((path / n).exists() for n in needed):
                tried.append(f"{label} {path}: exists but lacks the dataset sub-folder {what}")
            else:
                return path.resolve()
        return None

    explicit = str(data_dir).strip() if data_dir is not None else ""
    env = os.environ.get(ENV_VAR, "").strip()
    if explicit:
        raw = Path(explicit).expanduser()
        candidates = [raw] if raw.is_absolute() else _unique([Path.cwd() / raw, PROJECT_ROOT / raw])
        found = check("data-dir", candidates)
        if found is not None:
            return found
        tried.append(f"{ENV_VAR} and the default places: not searched because data-dir is set")
    else:
        tried.append("data-dir: not set")
        if env:
            found = check(ENV_VAR, [Path(os.path.abspath(Path(env).expanduser()))])
            if found is not None:
                return found
            tried.append("the default places: not searched because " + ENV_VAR + " is set")
        else:
            tried.append(f"{ENV_VAR}: not set")
            found = check("default", default_roots())
            if found is not None:
                return found
    target = f"the dataset files ({what})" if needed else "the dataset folder"
    searched = "\n".join(f"  - {line}" for line in tried)
    raise DataError(f"Cannot find {target}. Places searched:\n{searched}\n{HOW_TO_GET}")


def _unique(paths: list[Path]) -> list[Path]:
    seen: set[Path] = set()
    out = []
    for path in paths:
        key = Path(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out
