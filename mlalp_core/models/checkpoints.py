"""Loading model files without ever running code from them.

- :func:`safe_torch_load`: ``torch.load(weights_only=True)`` always. Old checkpoints (ML-GCN's
  ``voc_checkpoint.pth.tar``) may hold numpy scalars (e.g. ``best_score``); only when a file
  needs them is the load retried with exactly the numpy scalar reconstructor, ``numpy.dtype``
  and the numeric dtype classes allowed (:data:`NUMPY_SCALAR_GLOBALS`): they build numbers,
  nothing else.
- :func:`load_array_pickle`: ``.pkl`` files that hold plain numpy arrays (ML-GCN's word vectors
  and co-occurrence counts) through a restricted unpickler whose ``find_class`` returns guarded
  versions of the four numpy callables such pickles use and refuses every other global, so no
  ``__reduce__`` payload can run.
- State-dict helpers (``module.`` prefixes, BatchNorm ``num_batches_tracked`` buffers of
  pre-0.4 checkpoints) and mlalp's own model file (:func:`save_model_file`,
  :func:`read_model_file`): a zip ``torch.save`` of plain types and tensors only.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ModelLoadError, exception_line

#: Largest .pkl accepted (ML-GCN's are 24 kB and 3 kB).
MAX_PICKLE_BYTES = 64 * 1024 * 1024
MODEL_FILE_FORMAT = "mlalp-model"
MODEL_FILE_VERSION = 1

# The callables numpy's own pickles name, taken from numpy itself (no private-module imports).
_np_scalar: Any = np.float64(0).__reduce__()[0]  # numpy._core.multiarray.scalar
_np_reconstruct: Any = np.zeros(1).__reduce__()[0]  # numpy._core.multiarray._reconstruct
_np_frombuffer: Any = np.zeros(1).__reduce_ex__(5)[0]  # numpy._core.numeric._frombuffer
_NUMERIC_KINDS = frozenset("biufc")
_NUMERIC_DTYPE_CLASSES = tuple(sorted({type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFD"}, key=str))

#: The allow-list given to ``torch.serialization.safe_globals`` for checkpoints with numpy
#: scalars. Both module spellings: numpy < 2 wrote ``numpy.core``, numpy >= 2 ``numpy._core``.
NUMPY_SCALAR_GLOBALS: list = [
    (_np_scalar, "numpy.core.multiarray.scalar"),
    (_np_scalar, "numpy._core.multiarray.scalar"),
    np.dtype,
    *_NUMERIC_DTYPE_CLASSES,
]


def _check_file(path: str | os.PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file ({what})")
    if not p.is_file():
        raise ModelLoadError(f"{p}: not a file ({what})")
    return p


def _first_line(exc: BaseException) -> str:
    """What torch refused (its weights_only errors bury it under advice), else the first line."""
    m = re.search(r"(Unsupported global: GLOBAL \S+|Trying to call reduce for unrecognized function [^\n]+"
                  r"|Can only [^\n]+)", str(exc))
    return m.group(1).rstrip(". ") if m else exception_line(exc, limit=200)


def safe_torch_load(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load`` a file onto the CPU with ``weights_only=True`` (never anything else).

    Files saved on CUDA, in the legacy (pre-1.6) format or with numpy scalar values load;
    a file that needs any other Python object is refused with a one-line ModelLoadError.
    """
    p = _check_file(path, what)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            with torch.serialization.safe_globals(NUMPY_SCALAR_GLOBALS):
                return torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as second:  # name what was refused with numpy scalars allowed
            raise ModelLoadError(
                f"{p}: refused to load this {what}: {_first_line(second)} (mlalp loads plain weights only)"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any failure of a file we could not read
            raise ModelLoadError(f"{p}: not a readable PyTorch {what} ({_first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - corrupt zip, bad magic number, truncated file...
        raise ModelLoadError(f"{p}: not a readable PyTorch {what} ({_first_line(exc)})") from None


# ---------------------------------------------------------------------------------------------
# Plain numpy pickles
# ---------------------------------------------------------------------------------------------


class _Refused(Exception):
    pass


def _numeric_dtype(dt: Any) -> np.dtype:
    dt = np.dtype(dt) if not isinstance(dt, np.dtype) else dt
    if dt.kind not in _NUMERIC_KINDS or dt.fields is not None or dt.subdtype is not None:
        raise _Refused(f"non-numeric dtype {dt!s}")
    return dt


def _guarded_dtype(*args: Any) -> np.dtype:
    if not args or not isinstance(args[0], str):
        raise _Refused("numpy.dtype called with unexpected arguments")
    dt = np.dtype(*args)
    _numeric_dtype(dt)
    return dt


def _guarded_reconstruct(cls: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise _Refused(f"array subclass {cls!r}")
    return _np_reconstruct(np.ndarray, shape, dtype_code)


def _guarded_scalar(dtype: Any, data: Any = None) -> Any:
    _numeric_dtype(dtype)
    if not isinstance(data, (bytes, bytearray, str)):
        raise _Refused("numpy scalar without raw bytes")
    return _np_scalar(dtype, data)


def _guarded_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    _numeric_dtype(dtype)
    if not isinstance(buf, (bytes, bytearray, pickle.PickleBuffer)):
        raise _Refused("array data is not a byte buffer")
    return _np_frombuffer(buf, dtype, shape, order)


def _guarded_encode(obj: Any, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1').
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode with unexpected arguments")
    return obj.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _guarded_dtype,
    ("_codecs", "encode"): _guarded_encode,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _guarded_reconstruct
    _ALLOWED[(_mod, "scalar")] = _guarded_scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_mod, "_frombuffer")] = _guarded_frombuffer


class _ArrayUnpickler(pickle.Unpickler):
    """Builds dicts, lists, numbers, strings and numeric numpy arrays; refuses anything else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"it names {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("it uses persistent ids")


def load_array_pickle(path: str | os.PathLike, what: str = "array file") -> Any:
    """Unpickle a file that holds only plain numpy arrays/scalars in dicts, lists and tuples."""
    p = _check_file(path, what)
    size = p.stat().st_size
    if size > MAX_PICKLE_BYTES:
        raise ModelLoadError(f"{p}: {size / 2**20:.1f} MB is too large for a {what}")
    data = p.read_bytes()
    try:
        return _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except _Refused as exc:
        raise ModelLoadError(f"{p}: refused to unpickle this {what}: {exc}; only plain numpy arrays are accepted") from None
    except Exception as exc:  # noqa: BLE001 - truncated or not a pickle at all
        raise ModelLoadError(f"{p}: not a readable pickle ({what}): {type(exc).__name__}: {exc}"[:300]) from None


def check_array(
    value: Any, path: str | os.PathLike, what: str, shape: tuple[int | None, ...], kinds: str = "fiu"
) -> np.ndarray:
    """Validate a loaded array: numeric ``kinds``, the given shape (None = any), all finite."""
    if not isinstance(value, np.ndarray):
        raise ModelLoadError(f"{path}: the {what} must be a numpy array, got {type(value).__name__}")
    if value.dtype.kind not in kinds:
        raise ModelLoadError(f"{path}: the {what} has dtype {value.dtype}, expected a numeric array")
    if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
        want = "x".join("?" if s is None else str(s) for s in shape)
        raise ModelLoadError(f"{path}: the {what} has shape {'x'.join(map(str, value.shape)) or 'scalar'}, expected {want}")
    if value.dtype.kind in "fc" and not np.isfinite(value).all():
        raise ModelLoadError(f"{path}: the {what} contains NaN or infinite values")
    return value


# ---------------------------------------------------------------------------------------------
# State dicts
# ---------------------------------------------------------------------------------------------


def extract_state_dict(obj: Any, path: str | os.PathLike) -> OrderedDict[str, torch.Tensor]:
    """The state dict of a loaded file: the object itself or its ``state_dict`` entry."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise ModelLoadError(f"{path}: no state dict found (expected a dict of tensors or a dict with 'state_dict')")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelLoadError(f"{path}: the state dict holds non-tensor entries, e.g. {bad[0]!r}")
    return OrderedDict(obj)


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str = "module.") -> OrderedDict[str, torch.Tensor]:
    """Remove a prefix (DataParallel's ``module.``) when every key has it."""
    if state and all(k.startswith(prefix) for k in state):
        return OrderedDict((k[len(prefix):], v) for k, v in state.items())
    return OrderedDict(state)


def fill_num_batches_tracked(model: nn.Module, state: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Add the ``num_batches_tracked`` buffers (0) that checkpoints from PyTorch < 0.4 lack, for
    BatchNorm layers whose running statistics ARE in the file; every other key stays as it is,
    so a strict load still catches a missing or extra tensor."""
    out = OrderedDict(state)
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            prefix = f"{name}." if name else ""
            key = prefix + "num_batches_tracked"
            if key not in out and prefix + "running_mean" in out:
                out[key] = torch.tensor(0, dtype=torch.long)
    return out


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """``load_state_dict(strict=True)`` with mismatches reported in one line."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} of the wrong shape (e.g. {k}: {tuple(state[k].shape)} instead of {tuple(own[k].shape)})")
    if problems:
        raise ModelLoadError(f"{path}: the weights do not fit this model: {'; '.join(problems)}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path}: the weights do not fit this model ({_first_line(exc)})") from None


# ---------------------------------------------------------------------------------------------
# mlalp's own model files
# ---------------------------------------------------------------------------------------------


def save_model_file(
    path: str | os.PathLike, kind: str, model: nn.Module, config: Mapping[str, Any] | None = None,
    extra: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write a model as mlalp's own file: plain metadata, a state dict and extra tensors.

    ``kind`` names the builder that reads it back (e.g. "ml-gcn"); ``config`` holds plain values
    (strings, numbers, lists); ``extra`` tensors that are not in the state dict (word vectors).
    Written atomically, readable with ``weights_only=True`` and no allow-list.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": MODEL_FILE_FORMAT,
        "version": MODEL_FILE_VERSION,
        "kind": kind,
        "label_names": list(getattr(model, "label_names", ())),
        "input_size": list(getattr(model, "input_size", ())),
        "threshold": float(getattr(model, "threshold", 0.5)),
        "config": dict(config or {}),
        "extra": {k: v.detach().cpu() for k, v in (extra or {}).items()},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    tmp = p.with_name(p.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, p)
    return p


def is_model_file(obj: Any) -> bool:
    return isinstance(obj, Mapping) and obj.get("format") == MODEL_FILE_FORMAT


def looks_like_model_file(path: str | os.PathLike) -> bool:
    """Cheap guess, without unpickling or reading the tensors, whether a file is mlalp's own model
    file (for listings; loading still checks it properly)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None or z.getinfo(name).file_size > 1 << 20:
                return False
            return MODEL_FILE_FORMAT.encode() in z.read(name)
    except (OSError, zipfile.BadZipFile):
        return False


def read_model_file(path: str | os.PathLike, kind: str | None = None, obj: Any = None) -> dict[str, Any]:
    """Read (or check an already loaded) mlalp model file; ``kind`` must match when given."""
    p = Path(path)
    if obj is None:
        obj = safe_torch_load(p, "model file")
    if not is_model_file(obj):
        raise ModelLoadError(f"{p}: not an mlalp model file")
    if obj.get("version") != MODEL_FILE_VERSION:
        raise ModelLoadError(f"{p}: mlalp model file version {obj.get('version')!r} is not supported")
    if kind is not None and obj.get("kind") != kind:
        raise ModelLoadError(f"{p}: holds a {obj.get('kind')!r} model, not {kind!r}")
    for key, typ in (("label_names", list), ("input_size", list), ("config", dict), ("extra", dict), ("state_dict", dict)):
        if not isinstance(obj.get(key), typ):
            raise ModelLoadError(f"{p}: mlalp model file without a valid {key!r}")
    return dict(obj)
