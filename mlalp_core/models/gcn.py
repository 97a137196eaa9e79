"""The ML-GCN graph head (Chen et al., CVPR 2019), shared by ``demo-gcn`` and ``ml-gcn``.

Label word vectors pass through two bias-free graph convolutions over the label co-occurrence
graph; the resulting l x F matrix is a per-label classifier applied to the image feature.
Parameter names (``features.*``, ``gc1.weight``, ``gc2.weight``, ``A``) match the official
implementation so that its checkpoint loads strictly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import InvalidInputError
from .base import MultiLabelClassifier


def cooccurrence_adjacency(
    counts: np.ndarray, nums: np.ndarray, t: float = 0.4, p: float = 0.25
) -> np.ndarray:
    """ML-GCN's re-weighted, binarised conditional-probability graph (its ``gen_A``).

    ``counts[i, j]``: images holding labels i and j (zero diagonal, as in ML-GCN's files);
    ``nums[i]``: images holding label i.
    A = [counts / nums[:, None] >= t], rescaled to ``p / (column sum + 1e-6)`` and plus I.
    """
    counts = np.asarray(counts, dtype=np.float64)
    nums = np.asarray(nums, dtype=np.float64)
    n = counts.shape[0]
    if counts.shape != (n, n) or nums.shape != (n,):
        raise InvalidInputError(
            f"co-occurrence counts must be (l, l) with nums (l,), got {counts.shape} and {nums.shape}"
        )
    if not (np.isfinite(counts).all() and np.isfinite(nums).all()) or (nums < 0).any() or (counts < 0).any():
        raise InvalidInputError("co-occurrence counts must be finite and non-negative")
    cond = counts / np.maximum(nums[:, None], 1e-12)
    binary = (cond >= t).astype(np.float64)  # the formula as published: the diagonal is not special
    adj = binary * p / (binary.sum(0, keepdims=True) + 1e-6)
    return (adj + np.eye(n)).astype(np.float32)


def normalized_adjacency(A: torch.Tensor) -> torch.Tensor:
    """D A^T D with D = diag(rowsum(A)^-1/2): ML-GCN's ``gen_adj``."""
    d = A.sum(1).pow(-0.5)
    return (A * d[None, :]).t() * d[None, :]


class GraphConvolution(nn.Module):
    """H_out = adj @ (H_in @ W), no bias (as ML-GCN instantiates it)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        bound = 1.0 / math.sqrt(out_features)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return adj @ (h @ self.weight)


class GCNClassifier(MultiLabelClassifier):
    """A CNN trunk, global max pooling, and the ML-GCN head.

    Parameters
    ----------
    features: the trunk, (B, 3, H, W) normalised -> (B, F, h, w).
    feature_dim: F, the trunk's channel count (gc2's output size).
    word_vectors: (l, E) label embeddings (GloVe for VOC); kept as a non-persistent buffer
        because the official checkpoint does not contain them.
    adjacency: (l, l) the re-weighted graph of :func:`cooccurrence_adjacency`, stored as the
        never-trained parameter ``A`` as in the official checkpoint.
    hidden_dim: gc1's output size (1024 in ML-GCN).
    """

    #: reuse the label branch's output between forward calls while it is provably what recomputing
    #: it gives (:meth:`cached_label_classifiers`); False: recompute it at every call
    cache_label_branch: ClassVar[bool] = True

    def __init__(
        self,
        features: nn.Module,
        feature_dim: int,
        word_vectors: torch.Tensor | np.ndarray,
        adjacency: torch.Tensor | np.ndarray,
        label_names: Sequence[str],
        input_size: tuple[int, int],
        hidden_dim: int = 1024,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        threshold: float = 0.5,
    ) -> None:
        super().__init__(label_names, input_size, mean, std, threshold)
        wv = torch.as_tensor(np.asarray(word_vectors), dtype=torch.float32)
        adj = torch.as_tensor(np.asarray(adjacency), dtype=torch.float32)
        l = len(label_names)
        if wv.dim() != 2 or wv.shape[0] != l:
            raise InvalidInputError(f"word vectors must be ({l}, E), got {tuple(wv.shape)}")
        if adj.shape != (l, l):
            raise InvalidInputError(f"adjacency must be ({l}, {l}), got {tuple(adj.shape)}")
        if not (torch.isfinite(wv).all() and torch.isfinite(adj).all()):
            raise InvalidInputError("word vectors and adjacency must be finite")
        self.features = features
        self.pooling = nn.AdaptiveMaxPool2d(1)  # = MaxPool2d(14) on ML-GCN's 14x14 map at 448
        self.gc1 = GraphConvolution(wv.shape[1], hidden_dim)
        self.gc2 = GraphConvolution(hidden_dim, feature_dim)
        self.relu = nn.LeakyReLU(0.2)
        self.A = nn.Parameter(adj, requires_grad=False)
        self.register_buffer("word_vectors", wv, persistent=False)
        self.word_vectors: torch.Tensor
        self._label_cache: tuple[Any, ...] | None = None

    def label_classifiers(self) -> torch.Tensor:
        """The (l, F) matrix the graph head produces; independent of the image."""
        adj = normalized_adjacency(self.A).detach()
        h = self.relu(self.gc1(self.word_vectors, adj))
        return self.gc2(h, adj)

    def cached_label_classifiers(self) -> torch.Tensor:
        """:meth:`label_classifiers`, computed once and reused while that is provably what
        recomputing it would give (an attack calls the model thousands of times with the same
        weights; the branch does not depend on the image).

        The entry is reused only if, since it was computed: none of the tensors the branch reads
        (``A``, the word vectors, gc1's and gc2's weights) was written in place (version counters),
        replaced, moved or converted (identity, data_ptr, device, dtype, shape, strides; the entry
        holds their memory, so no other tensor can take its address; ``.to()`` and the like also
        drop the entry), no module of the branch was replaced, the LeakyReLU slope, train/eval and
        the arithmetic settings (threads, float32 matmul precision) are the same, and the output
        itself was not written in place. It is bypassed (recomputed, not stored) when autograd
        could need gradients to the parameters (grad mode on and one of those tensors requires
        grad: training keeps its graph), under autocast and in inference mode. Writes that bypass
        version counters (through ``.data`` or numpy views) are not seen: set
        :attr:`cache_label_branch` to False around such code.
        """
        if not self.cache_label_branch:
            return self.label_classifiers()
        deps = (self.A, self.word_vectors, self.gc1.weight, self.gc2.weight)
        if (torch.is_inference_mode_enabled() or any(t.is_inference() for t in deps)
                or (torch.is_grad_enabled() and any(t.requires_grad for t in deps))
                or torch.is_autocast_enabled(deps[0].device.type)):
            return self.label_classifiers()
        state = (tuple((t._version, t.data_ptr(), t.device, t.dtype, t.shape, t.stride()) for t in deps),
                 self.gc1, self.gc2, self.relu, self.relu.negative_slope, self.training,
                 torch.get_num_threads(), torch.get_float32_matmul_precision())
        entry = self._label_cache
        if entry is not None:
            held, _memory, held_state, out, out_version = entry
            if all(a is b for a, b in zip(held, deps)) and held_state == state and out._version == out_version:
                return out
        out = self.label_classifiers()
        self._label_cache = (deps, tuple(t.detach() for t in deps), state, out, out._version)
        return out

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> GCNClassifier:
        self._label_cache = None  # .to(), .double() ...: the key would miss anyway; free the old tensors now
        return super()._apply(fn, recurse)

    def image_features(self, x_normalized: torch.Tensor) -> torch.Tensor:
        return self.pooling(self.features(x_normalized)).flatten(1)

    def classify(self, x_normalized: torch.Tensor) -> torch.Tensor:
        return self.image_features(x_normalized) @ self.cached_label_classifiers().t()
