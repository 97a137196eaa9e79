"""Models by name: the demo models, the paper's ML-GCN and ML-LIW, and users' own models.

``list_models`` never loads a heavy model and never raises for a missing file: each entry says
whether it is usable and, if not, what to set. ``load_model`` returns the model in eval mode on
the resolved device, or raises :class:`ConfigurationError` with that same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.voc import VOC_CLASSES
from ..device import DeviceLike, resolve_device
from ..errors import ConfigurationError, MlalpError, ModelLoadError, exception_line
from ..settings import Settings, load_settings
from . import BUILTIN_NAMES, DEMO_MODEL_NAMES
from .base import MultiLabelClassifier


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    kind: str  # "demo", "paper" or "user"
    input_size: tuple[int, int] | None
    num_labels: int | None
    available: bool
    reason: str = ""
    source: str = ""  # the file(s) it loads from


def _missing(path: Path | None, env: str, what: str) -> str | None:
    """Why a configured path cannot be used, or None if it is fine."""
    if path is None:
        return f"set {env} ({what})"
    if not path.is_file():
        return f"{env} names {path}, which does not exist"
    return None


def _demo_infos() -> list[ModelInfo]:
    try:
        from ..data.demo import DEMO_LABELS, SCENE_SIZE
        from . import demo
    except ImportError as exc:
        return [ModelInfo(n, "demo model", "demo", None, None, False, f"{n}: demo models unavailable ({exc})")
                for n in DEMO_MODEL_NAMES]
    out = []
    for name in DEMO_MODEL_NAMES:
        style = "ML-GCN" if name.endswith("gcn") else "ML-LIW"
        desc = f"small {style}-style model trained on the bundled demo scenes, {SCENE_SIZE}x{SCENE_SIZE}"
        path = Path(demo.MODELS_DIR) / f"{name}.pt"
        ok = path.is_file()
        out.append(ModelInfo(name, desc, "demo", (SCENE_SIZE, SCENE_SIZE), len(DEMO_LABELS), ok,
                             "" if ok else f"{name}: {path} is missing: run `mlalp train-demo`", str(path)))
    return out


def _mlgcn_info(s: Settings) -> ModelInfo:
    from .checkpoints import looks_like_model_file

    ckpt = _missing(s.mlgcn_checkpoint, "MLALP_MLGCN_CHECKPOINT", "voc_checkpoint.pth.tar")
    # mlalp's own ML-GCN files carry their word vectors; the official checkpoint needs the file.
    own = (ckpt is None and s.mlgcn_checkpoint is not None and s.mlgcn_word_vectors is None
           and looks_like_model_file(s.mlgcn_checkpoint))
    wv = None if own else _missing(s.mlgcn_word_vectors, "MLALP_MLGCN_WORD_VECTORS", "voc_glove_word2vec.pkl")
    why = [r for r in (ckpt, wv) if r]
    if s.mlgcn_adjacency is not None and not s.mlgcn_adjacency.is_file():
        why.append(f"MLALP_MLGCN_ADJACENCY names {s.mlgcn_adjacency}, which does not exist")
    return ModelInfo(
        "ml-gcn", "ML-GCN (ResNet-101 + label graph), 448x448, VOC's 20 labels (the paper's first model) or COCO's 80, "
        "by its checkpoint", "paper", (448, 448), None, not why, ("ml-gcn: " + " and ".join(why)) if why else "",
        str(s.mlgcn_checkpoint or ""),
    )


def _mlliw_info(s: Settings) -> ModelInfo:
    why = _missing(s.mlliw_checkpoint, "MLALP_MLLIW_CHECKPOINT", "the ML-LIW state dict or an mlalp model file")
    return ModelInfo(
        "ml-liw", "ML-LIW (Inception-v3 + linear head, LIW loss), VOC, 299x299 (the paper's second model)",
        "paper", (299, 299), len(VOC_CLASSES), why is None, f"ml-liw: {why}" if why else "",
        str(s.mlliw_checkpoint or ""),
    )


def _user_infos(s: Settings, taken: set[str]) -> list[ModelInfo]:
    from .user import PICKLE_REFUSAL, file_kind, read_manifest

    out = []
    for path in s.user_models:
        try:
            m = read_manifest(path)
        except ModelLoadError as exc:
            out.append(ModelInfo(Path(path).stem, "user model (manifest unreadable)", "user", None, None, False,
                                 str(exc), str(path)))
            continue
        if m.name in taken:  # listed under another name: the model it would shadow stays usable
            what = "a built-in model's" if m.name in BUILTIN_NAMES else "already taken"
            out.append(ModelInfo(f"{m.name} [{Path(path).name}]", m.description or "user model", "user", m.input_size,
                                 len(m.labels), False,
                                 f"{path}: the name {m.name!r} is {what}; rename the model in its manifest", str(path)))
            continue
        taken.add(m.name)
        pickled = file_kind(m.file) == "pickle"  # its table of contents says so; nothing is loaded
        out.append(ModelInfo(m.name, m.description or f"user model ({m.format})", "user", m.input_size,
                             len(m.labels), not pickled, f"{m.file} {PICKLE_REFUSAL}" if pickled else "",
                             str(m.manifest)))
    return out


#: Models registered from Python in this process (:func:`register`), by name.
_REGISTERED: dict[str, MultiLabelClassifier] = {}


def register(model: MultiLabelClassifier, name: str | None = None) -> str:
    """Make a model built in Python (e.g. by :func:`mlalp_core.models.wrap.wrap`) known by name to
    ``load_model``, the batch runner and an app running in this process; returns the name."""
    if not isinstance(model, MultiLabelClassifier):
        raise ConfigurationError(f"register takes an mlalp model (see mlalp_core.wrap), got {type(model).__name__}")
    key = str(name or getattr(model, "registry_name", "") or "").strip()
    if not key or any(c.isspace() for c in key):
        raise ConfigurationError(f"a registered model needs a name without spaces, got {key!r}")
    taken = {i.name for i in _demo_infos()} | set(BUILTIN_NAMES)
    if key in taken:
        raise ConfigurationError(f"the name {key!r} is a built-in model's; register the model under another name")
    model.registry_name = key
    _REGISTERED[key] = model
    return key


def _registered_infos() -> list[ModelInfo]:
    return [ModelInfo(name, f"registered from Python ({type(m).__name__})", "python", m.input_size, m.num_labels,
                      True, "", getattr(m, "source", "")) for name, m in _REGISTERED.items()]


def list_models(settings: Settings | None = None) -> list[ModelInfo]:
    """Every model mlalp knows of, usable or not (with the reason)."""
    s = settings or load_settings()
    infos = _demo_infos() + [_mlgcn_info(s), _mlliw_info(s)] + _registered_infos()
    infos += _user_infos(s, {i.name for i in infos})
    return infos


def load_model(name: str, device: DeviceLike = None, settings: Settings | None = None) -> MultiLabelClassifier:
    """The model ``name`` in eval mode on ``device`` (default: the settings' device)."""
    s = settings or load_settings()
    dev = resolve_device(device, s)
    infos = {i.name: i for i in list_models(s)}
    if name not in infos:
        raise ConfigurationError(f"unknown model {name!r}; known: {', '.join(infos)}")
    info = infos[name]
    if not info.available:
        raise ConfigurationError(info.reason)
    if info.kind == "python":
        model = _REGISTERED[name]
    elif info.kind == "demo":
        from .demo import load_demo_model

        model = load_demo_model(name, dev)
    elif name == "ml-gcn" and s.mlgcn_checkpoint is not None:  # available: it is set
        from .ml_gcn import load_ml_gcn

        model = load_ml_gcn(s.mlgcn_checkpoint, s.mlgcn_word_vectors, s.mlgcn_adjacency)
    elif name == "ml-liw" and s.mlliw_checkpoint is not None:
        from .ml_liw import load_ml_liw

        model = load_ml_liw(s.mlliw_checkpoint)
    else:
        from .user import load_user_model

        model = load_user_model(info.source)
    try:
        model = model.to(dev)
    except (RuntimeError, MlalpError) as exc:
        raise ConfigurationError(f"{name}: cannot move the model to {dev} ({exception_line(exc)})") from None
    model.registry_name = name
    return model.eval()
