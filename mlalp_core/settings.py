"""Where mlalp finds data, checkpoints and its results store: one settings source.

Three layers, later ones winning: defaults, an optional ``mlalp.toml`` (in the current directory,
or the file named by ``MLALP_CONFIG``), environment variables, and programmatic overrides (the
app's sidebar). Every setting has one name used everywhere: the TOML key is the field name
(``voc_root``), the environment variable is ``MLALP_`` + the upper-cased name (``MLALP_VOC_ROOT``).

Example ``mlalp.toml`` (relative paths are relative to the file)::

    voc_root = "/data/VOCdevkit"
    mlgcn_checkpoint = "checkpoints/voc_checkpoint.pth.tar"
    mlgcn_word_vectors = "checkpoints/voc_glove_word2vec.pkl"
    mlliw_checkpoint = "checkpoints/mlliw_voc2007.pth.tar"
    user_models = ["my_models/resnet_voc.toml"]
    device = "auto"
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

ENV_PREFIX = "MLALP_"
CONFIG_FILE_NAME = "mlalp.toml"
DEFAULT_RESULTS = Path("results") / "mlalp.sqlite"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mlalp`` or ``~/.cache/mlalp``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "mlalp"


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Paths are absolute (or None when not configured); nothing is checked
    for existence here: the registries say what is usable and why not."""

    voc_root: Path | None = None
    coco_root: Path | None = None
    #: ML-GCN's category.json ({name: index}) when the COCO label order is not the ids' order
    coco_categories: Path | None = None
    nuswide_root: Path | None = None
    mlgcn_checkpoint: Path | None = None
    mlgcn_word_vectors: Path | None = None
    mlgcn_adjacency: Path | None = None
    mlliw_checkpoint: Path | None = None
    user_models: tuple[Path, ...] = ()
    results: Path = field(default_factory=lambda: DEFAULT_RESULTS.absolute())
    cache_dir: Path = field(default_factory=default_cache_dir)
    device: str = "auto"
    #: The ``[attacks.<name>]`` tables of mlalp.toml as written: the starting values of
    #: ``mlalp bench``/``mlalp attack`` and the app (``--set`` and the app's widgets win), once
    #: each attack's schema has parsed them (:func:`mlalp_core.attacks.file_settings`).
    attacks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: The TOML file that was read, if any.
    config_file: Path | None = None
    #: Where each setting came from: "default", "file", "env" or "override".
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)


def env_name(key: str) -> str:
    """The environment variable of a setting: ``voc_root`` -> ``MLALP_VOC_ROOT``."""
    return ENV_PREFIX + key.upper()


#: The settings a user can set (everything but the bookkeeping fields).
SETTING_NAMES: tuple[str, ...] = tuple(
    f.name for f in fields(Settings) if f.name not in ("config_file", "sources")
)
#: Settings that only the file sets (tables, not single values).
_FILE_ONLY = {"attacks"}
_PATH_KEYS = {"voc_root", "coco_root", "coco_categories", "nuswide_root", "mlgcn_checkpoint", "mlgcn_word_vectors", "mlgcn_adjacency",
              "mlliw_checkpoint", "results", "cache_dir"}


def _as_path(value: Any, key: str, origin: str, base: Path) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigurationError(f"{origin}: {key} must be a path string, got {type(value).__name__}")
    text = os.fspath(value).strip()
    if not text:
        return None
    p = Path(os.path.expandvars(text)).expanduser()
    return p if p.is_absolute() else (base / p).absolute()


def _as_paths(value: Any, key: str, origin: str, base: Path) -> tuple[Path, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, os.PathLike)):
        items = [s for s in os.fspath(value).split(os.pathsep) if s.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ConfigurationError(f"{origin}: {key} must be a list of paths, got {type(value).__name__}")
    out = []
    for item in items:
        p = _as_path(item, key, origin, base)
        if p is not None:
            out.append(p)
    return tuple(out)


def _convert(key: str, value: Any, origin: str, base: Path) -> Any:
    if key == "user_models":
        return _as_paths(value, key, origin, base)
    if key in _PATH_KEYS:
        p = _as_path(value, key, origin, base)
        if p is None and key in ("results", "cache_dir"):
            return getattr(Settings(), key)
        return p
    if key == "attacks":
        return _attack_tables(value, origin)
    if key == "device":
        if value is None:
            return "auto"
        if not isinstance(value, str):
            raise ConfigurationError(f"{origin}: device must be a string such as 'auto', 'cpu' or 'cuda:0'")
        return value.strip() or "auto"
    raise ConfigurationError(f"{origin}: unknown setting {key!r}; known: {', '.join(SETTING_NAMES)}")


def _attack_tables(value: Any, origin: str) -> dict[str, dict[str, Any]]:
    """``[attacks.<name>]`` tables as written (a table of tables). Each attack's schema parses its
    table where the settings are used (:func:`mlalp_core.attacks.file_settings`): the settings sit
    below the attacks, which find their device through them, and never import them."""
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{origin}: attacks must be a table of tables, e.g. [attacks.mla-lp] box = true")
    out = {}
    for name, table in value.items():
        if not isinstance(table, Mapping):
            raise ConfigurationError(f"{origin}: [attacks.{name}] must be a table of settings")
        out[str(name)] = dict(table)
    return out


def find_config_file(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Path | None:
    """``MLALP_CONFIG`` if set (it must exist), else ``./mlalp.toml`` if present."""
    env = os.environ if environ is None else environ
    named = env.get(ENV_PREFIX + "CONFIG", "").strip()
    if named:
        p = Path(named).expanduser().absolute()
        if not p.is_file():
            raise ConfigurationError(f"MLALP_CONFIG names {p}, which is not a file")
        return p
    p = (cwd or Path.cwd()) / CONFIG_FILE_NAME
    if p.exists() and not p.is_file():
        raise ConfigurationError(f"{p.absolute()} is a folder (or not a regular file), not a settings file: rename "
                                 "it, or name the settings file with MLALP_CONFIG")
    return p.absolute() if p.is_file() else None


def read_config_file(path: Path) -> dict[str, Any]:
    """The TOML settings table, with unknown keys refused (they are usually typos)."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML ({exc})") from exc
    except RecursionError:
        raise ConfigurationError(f"{path}: nested too deeply to be a settings file") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    unknown = sorted(set(data) - set(SETTING_NAMES))
    if unknown:
        raise ConfigurationError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(SETTING_NAMES)}"
        )
    return data


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Defaults < mlalp.toml < environment < ``overrides`` (keys are the setting names).

    An override of ``None`` means "no override"; an empty string clears a path setting.
    """
    env = os.environ if environ is None else environ
    here = (cwd or Path.cwd()).absolute()
    values: dict[str, Any] = {}
    sources = {k: "default" for k in SETTING_NAMES}

    config = find_config_file(env, here)
    if config is not None:
        for key, raw in read_config_file(config).items():
            values[key] = _convert(key, raw, str(config), config.parent)
            sources[key] = "file"

    for key in SETTING_NAMES:
        if key in _FILE_ONLY:
            continue
        name = env_name(key)
        if name in env and env[name].strip():
            values[key] = _convert(key, env[name], f"environment variable {name}", here)
            sources[key] = "env"

    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        values[key] = _convert(key, raw, "settings override", here)
        sources[key] = "override"

    values.setdefault("results", here / DEFAULT_RESULTS)
    return replace(Settings(), **values, config_file=config, sources=dict(sources))
