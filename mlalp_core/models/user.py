"""A researcher's own multi-label classifier, brought as a file plus a small manifest.

The network is a TorchScript file (``torch.jit.save`` of a scripted or traced module) or a
``torch.export`` program (``torch.export.save``, usually ``.pt2``): both load without running
any Python from the file. The manifest (TOML or JSON) says how to use it::

    name = "resnet50-voc"            # how the registry and the app call it
    file = "resnet50_voc.pt"         # relative to the manifest
    labels = ["aeroplane", "bicycle", ...]
    input_size = [448, 448]          # (H, W) the network expects
    mean = [0.485, 0.456, 0.406]     # normalisation applied before the network ...
    std = [0.229, 0.224, 0.225]
    # normalization = "none"         # ... or none: the network takes [0,1] pixels itself
    threshold = 0.5
    output = "logits"                # or "probabilities" (sigmoid outputs)
    description = "optional text"
    # format = "torchscript"         # or "export"; guessed from the file otherwise

On loading, the network runs once on a blank image: its output must be (1, len(labels)) and
finite (in [0,1] for "probabilities"), else the manifest/file pair is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tomllib
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..errors import ModelLoadError, exception_line
from .base import PROB_EPS, MultiLabelClassifier

#: Largest manifest accepted.
MAX_MANIFEST_BYTES = 256 * 1024
_KEYS = {"name", "file", "labels", "input_size", "mean", "std", "normalization", "threshold", "output",
         "description", "format"}


@dataclass(frozen=True)
class UserManifest:
    name: str
    file: Path
    labels: tuple[str, ...]
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    threshold: float
    output: Literal["logits", "probabilities"]
    format: Literal["torchscript", "export"]
    description: str
    manifest: Path


def _fail(path: Path, msg: str) -> ModelLoadError:
    return ModelLoadError(f"{path}: {msg}")


def _triple(value: Any, path: Path, key: str) -> tuple[float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        raise _fail(path, f"{key} must be a list of 3 numbers")
    out = tuple(float(v) for v in value)
    if not all(abs(v) < float("inf") for v in out):
        raise _fail(path, f"{key} must be finite")
    return out  # type: ignore[return-value]


def file_kind(file: Path) -> str:
    """What a model file is, from its table of contents (nothing in it is loaded): "torchscript",
    "export", "pickle" (a ``torch.save`` file: weights or a pickled module, which mlalp never
    unpickles) or "unknown"."""
    try:
        with zipfile.ZipFile(file) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        try:
            with open(file, "rb") as fh:
                head = fh.read(2)
        except OSError:
            return "unknown"
        # a legacy (non-zip) torch.save file is a pickle stream: protocol 2+ starts with 0x80
        return "pickle" if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5 else "unknown"
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith(("serialized_exported_program.json", "/archive_format")) or "/models/" in n for n in names):
        return "export"
    if any(n.endswith("data.pkl") for n in names):
        return "pickle"
    return "unknown"


#: What a torch.save file given as a model file is told.
PICKLE_REFUSAL = ("is a torch.save file (a pickle of weights or of a module), which mlalp does not unpickle: save "
                  "the network with torch.jit.save(torch.jit.script(net), FILE) or torch.export.save(torch.export."
                  "export(net, (x,)), FILE.pt2) and name that file")


def read_manifest(path: str | os.PathLike) -> UserManifest:
    """Parse and validate a manifest; the model file must exist (it is not loaded here)."""
    p = Path(path).expanduser().absolute()
    if not p.is_file():
        raise _fail(p, "no such manifest file")
    if p.stat().st_size > MAX_MANIFEST_BYTES:
        raise _fail(p, "manifest is too large")
    try:
        raw = p.read_bytes()
        data = json.loads(raw) if p.suffix.lower() == ".json" else tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        kind = "JSON" if p.suffix.lower() == ".json" else "TOML"
        raise _fail(p, f"not valid {kind} ({exception_line(exc)})") from None
    except RecursionError:
        raise _fail(p, "nested too deeply to be a manifest (a flat table of settings)") from None
    if not isinstance(data, dict):
        raise _fail(p, "the manifest must be a table/object")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise _fail(p, f"unknown manifest key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    for key in ("name", "file", "labels", "input_size"):
        if key not in data:
            raise _fail(p, f"the manifest needs {key!r}")
    name = data["name"]
    if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name.strip()):
        raise _fail(p, "name must be a non-empty string without spaces")
    labels = data["labels"]
    if not isinstance(labels, list) or not labels or not all(isinstance(s, str) and s for s in labels):
        raise _fail(p, "labels must be a non-empty list of names")
    if len(set(labels)) != len(labels):
        raise _fail(p, "labels must be unique")
    size = data["input_size"]
    if not isinstance(size, list) or len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 4096 for v in size):
        raise _fail(p, "input_size must be [H, W], integers between 8 and 4096")
    norm = data.get("normalization")
    if norm is not None:
        if norm != "none":
            raise _fail(p, "normalization may only be \"none\" (or give mean and std)")
        if "mean" in data or "std" in data:
            raise _fail(p, "give either normalization = \"none\" or mean and std, not both")
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    else:
        if "mean" not in data or "std" not in data:
            raise _fail(p, "give mean and std, or normalization = \"none\"")
        mean, std = _triple(data["mean"], p, "mean"), _triple(data["std"], p, "std")
        if min(std) <= 0:
            raise _fail(p, "std must be positive")
    threshold = data.get("threshold", 0.5)
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 < threshold < 1:
        raise _fail(p, "threshold must be a number in (0, 1)")
    output = data.get("output", "logits")
    if output not in ("logits", "probabilities"):
        raise _fail(p, "output must be \"logits\" or \"probabilities\"")
    file = data["file"]
    if not isinstance(file, str) or not file:
        raise _fail(p, "file must be a path string")
    f = Path(os.path.normpath(p.parent / file))
    if Path(file).is_absolute() or not f.is_relative_to(p.parent):
        raise _fail(p, f"file {file!r} must be inside the manifest's folder ({p.parent}); move the model file "
                       "next to the manifest")
    if not f.is_file():
        raise _fail(p, f"the model file {f} does not exist")
    fmt = data.get("format") or ("export" if f.suffix == ".pt2" or file_kind(f) == "export" else "torchscript")
    if fmt not in ("torchscript", "export"):
        raise _fail(p, "format must be \"torchscript\" or \"export\"")
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise _fail(p, "description must be a string")
    return UserManifest(name.strip(), f, tuple(labels), (size[0], size[1]), mean, std, float(threshold),
                        output, "export" if fmt == "export" else "torchscript", desc, p)


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[list[str]]:
    """Records of these loggers (and their children) kept from the console and collected, one line
    each: torch.export logs a whole traceback as a warning before it raises "check the warnings
    above"; mlalp's one line gives the reason instead."""
    seen: list[str] = []

    def keep(record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        seen.append(exception_line(exc, limit=200) if exc is not None else record.getMessage().splitlines()[0])
        return False

    loggers = [logging.getLogger(n) for n in names]
    loggers += [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
                if any(n.startswith(p + ".") for p in names)]
    for lg in loggers:
        lg.addFilter(keep)
    try:
        yield seen
    finally:
        for lg in loggers:
            lg.removeFilter(keep)


def _load_network(m: UserManifest) -> nn.Module:
    f = m.file
    if file_kind(f) == "pickle":  # refused before torch sees it: nothing is unpickled, nothing logged
        raise ModelLoadError(f"{f} {PICKLE_REFUSAL}")
    try:
        if m.format == "torchscript":
            with warnings.catch_warnings():
                # torch.jit is deprecated upstream; a user's TorchScript file is still a valid choice.
                warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated", category=FutureWarning)
                net = torch.jit.load(str(f), map_location="cpu")
        else:
            with _quiet_loggers("torch.export", "torch._export") as logged:
                net = torch.export.load(str(f)).module()
    except Exception as exc:  # noqa: BLE001 - every way a foreign file can fail to load
        what = "a TorchScript file (torch.jit.save)" if m.format == "torchscript" else "a torch.export program (torch.export.save)"
        why = exception_line(exc, limit=200)
        if "warnings above" in why and logged:
            why = logged[-1]
        raise ModelLoadError(f"{f}: not {what}: {why}") from None
    return net


class UserModel(MultiLabelClassifier):
    """A TorchScript/exported network wrapped in the classifier contract."""

    def __init__(self, manifest: UserManifest, network: nn.Module) -> None:
        super().__init__(manifest.labels, manifest.input_size, manifest.mean, manifest.std, manifest.threshold)
        self.manifest = manifest
        self.net = network
        self.output_kind = manifest.output
        self.source = str(manifest.file)
        self._per_example = False

    def train(self, mode: bool = True) -> UserModel:
        # A foreign network is used as it is; exported programs cannot switch modes anyway.
        self.training = mode
        if isinstance(self.net, torch.jit.ScriptModule):
            self.net.train(mode)
        return self

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        if self._per_example and x.shape[0] != 1:
            return torch.cat([self._raw(x[i:i + 1]) for i in range(x.shape[0])])
        out = self.net(x)
        if not isinstance(out, torch.Tensor):
            raise ModelLoadError(f"{self.manifest.file}: the network returned {type(out).__name__}, not a tensor")
        return out

    def classify(self, x_normalized: torch.Tensor) -> torch.Tensor:
        out = self._raw(x_normalized)
        if self.output_kind == "probabilities":
            out = torch.logit(out, eps=PROB_EPS)
        return out

    def network_outputs(self, x: torch.Tensor) -> torch.Tensor:
        return self._raw(self.normalize(x))

    def describe(self) -> dict:
        info = super().describe()
        info.update(model=f"user model {self.manifest.name!r} ({self.manifest.format})",
                    output=self.output_kind, manifest=str(self.manifest.manifest))
        return info


def _check_output(model: UserModel, out: Any, batch: int) -> None:
    m = model.manifest
    if not isinstance(out, torch.Tensor):
        raise _fail(m.file, f"the network returned {type(out).__name__}, expected a tensor of shape (B, {len(m.labels)})")
    if tuple(out.shape) != (batch, len(m.labels)):
        raise _fail(m.file, f"on a blank {m.input_size[0]}x{m.input_size[1]} image the network returned shape "
                            f"{tuple(out.shape)}, but the manifest {m.manifest.name} lists {len(m.labels)} labels "
                            f"(expected ({batch}, {len(m.labels)}))")
    if not torch.isfinite(out).all():
        raise _fail(m.file, "the network's output on a blank image is not finite")
    if m.output == "probabilities" and (out.min() < 0 or out.max() > 1):
        raise _fail(m.file, "the manifest says output = \"probabilities\" but the network's outputs leave [0, 1]; use output = \"logits\"")


def load_user_model(manifest: str | os.PathLike | UserManifest) -> UserModel:
    """Load a manifest's network and check it on a blank image (grey, 0.5) of its input size."""
    m = manifest if isinstance(manifest, UserManifest) else read_manifest(manifest)
    model = UserModel(m, _load_network(m))
    model.eval()
    if isinstance(model.net, torch.jit.ScriptModule):
        model.net.eval()
    blank = torch.full((1, 3, *m.input_size), 0.5)
    with torch.no_grad():
        try:
            out = model.net(model.normalize(blank))
        except Exception as exc:  # noqa: BLE001 - a foreign network failing on a valid input
            raise _fail(m.file, f"forward pass on a blank {m.input_size[0]}x{m.input_size[1]} image failed: "
                                f"{exception_line(exc, limit=200)}") from None
        _check_output(model, out, 1)
        if m.format == "export":
            # Programs exported with a static batch of 1 are run one example at a time.
            try:
                _check_output(model, model.net(model.normalize(blank.expand(2, -1, -1, -1))), 2)
            except Exception:  # noqa: BLE001
                model._per_example = True
    return model
