"""Classifier quality (the paper's Table I), following the multi-label review the paper cites
(Zhang & Zhou): hamming loss, ranking loss, micro/macro F1 and the instance-wise label-ranking
average precision, plus mAP and exact match."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# ---------------------------------------------------------------------------------------------


def _np(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def hamming_loss(pred: np.ndarray, labels: np.ndarray) -> float:
    return float((_np(pred).astype(bool) != _np(labels).astype(bool)).mean())


def f1_scores(pred: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(micro-F1, macro-F1); a label with no positive and no prediction scores 0 (as scikit-learn)."""
    p, y = _np(pred).astype(bool), _np(labels).astype(bool)
    tp = (p & y).sum(0).astype(float)
    fp = (p & ~y).sum(0).astype(float)
    fn = (~p & y).sum(0).astype(float)
    denom = 2 * tp.sum() + fp.sum() + fn.sum()
    micro = 2 * tp.sum() / denom if denom else 0.0
    per = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    return float(micro), float(per.mean())


def ranking_loss(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over examples of the fraction of (positive, negative) label pairs ordered wrongly
    (s_pos <= s_neg). Examples with no positive or no negative label count as 0, as in
    scikit-learn's ``label_ranking_loss``, so the two agree."""
    s, y = _np(scores).astype(np.float64), _np(labels).astype(bool)
    if len(s) == 0:
        return 0.0
    losses = []
    for si, yi in zip(s, y):
        pos, neg = si[yi], si[~yi]
        if len(pos) == 0 or len(neg) == 0:
            losses.append(0.0)
            continue
        losses.append((pos[:, None] <= neg[None, :]).mean())
    return float(np.mean(losses))


def label_ranking_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Instance-wise average precision: for each positive label, the share of labels ranked at or
    above it that are positive, averaged over positives, then over examples. An example with no
    positive (or only positives) scores 1, as in scikit-learn's LRAP."""
    s, y = _np(scores).astype(np.float64), _np(labels).astype(bool)
    vals = []
    for si, yi in zip(s, y):
        if not yi.any() or yi.all():
            vals.append(1.0)
            continue
        pos_scores = si[yi]
        rank_all = (si[None, :] >= pos_scores[:, None]).sum(1)
        rank_pos = (pos_scores[None, :] >= pos_scores[:, None]).sum(1)
        vals.append((rank_pos / rank_all).mean())
    return float(np.mean(vals)) if vals else 0.0


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Per-label average precision, sum over thresholds of (R_n - R_{n-1}) P_n with tied scores
    forming one threshold (as scikit-learn), averaged over labels that have a positive example:
    the mAP that ML-GCN reports."""
    s, y = _np(scores).astype(np.float64), _np(labels).astype(bool)
    aps = []
    for j in range(s.shape[1]):
        yj = y[:, j]
        if not yj.any():
            continue
        order = np.argsort(-s[:, j], kind="mergesort")
        sj, hits = s[order, j], yj[order]
        last = np.r_[np.nonzero(np.diff(sj))[0], len(sj) - 1]  # end of each run of tied scores
        tp = np.cumsum(hits)[last]
        precision = tp / (last + 1)
        recall = tp / yj.sum()
        aps.append(float(np.sum(np.diff(np.r_[0.0, recall]) * precision)))
    return float(np.mean(aps)) if aps else 0.0


def classification_report(scores: Any, labels: Any, threshold: float = 0.5) -> dict[str, float]:
    """Table I of the paper (plus mAP and exact-match accuracy) from probabilities and labels."""
    s, y = _np(scores).astype(np.float64), _np(labels).astype(bool)
    if s.shape != y.shape or s.ndim != 2:
        raise ValueError(f"scores and labels must both be (N, l), got {s.shape} and {y.shape}")
    pred = s >= threshold
    micro, macro = f1_scores(pred, y)
    return {
        "hamming_loss": hamming_loss(pred, y),
        "ranking_loss": ranking_loss(s, y),
        "micro_f1": micro,
        "macro_f1": macro,
        "average_precision": label_ranking_average_precision(s, y),
        "mean_ap": mean_average_precision(s, y),
        "exact_match": float((pred == y).all(1).mean()),
        "examples": int(s.shape[0]),
    }
