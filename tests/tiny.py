"""A tiny trained multi-label CNN and a synthetic data set, for fast tests of the machinery.

Images are dark noisy 16x16 scenes; label c < 3: a bright 6x6 patch in channel c; label 3:
stripes. The model trains in about a second and classifies most scenes right.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mlalp_core.models.base import MultiLabelClassifier

LABELS = ("red", "green", "blue", "stripes")


class TinyCNN(MultiLabelClassifier):
    def __init__(self) -> None:
        super().__init__(LABELS, (16, 16), mean=(0.5,) * 3, std=(0.25,) * 3)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
        )

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


def synthetic_scenes(n: int, g: torch.Generator | int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Scenes drawn from ``g`` (a generator, or a seed for a fresh one)."""
    if isinstance(g, int):
        g = torch.Generator().manual_seed(g)
    y = torch.rand(n, 4, generator=g) < 0.5
    x = torch.rand(n, 3, 16, 16, generator=g) * 0.3
    for i in range(n):
        for c in range(3):
            if y[i, c]:
                r, s = torch.randint(0, 11, (2,), generator=g).tolist()
                x[i, c, r:r + 6, s:s + 6] = 0.9
        if y[i, 3]:
            x[i, :, ::4, :] += 0.5
    return x.clamp(0, 1), y


def train_tiny(steps: int = 200) -> TinyCNN:
    """Label smoothing (0.1 / 0.9) keeps the outputs off saturation, as real models' are."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = TinyCNN()
    x, y = synthetic_scenes(512, g)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        i = torch.randint(0, 512, (64,), generator=g)
        loss = nn.functional.binary_cross_entropy_with_logits(model(x[i]), y[i].float() * 0.8 + 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_tiny(path: str | Path) -> TinyCNN:
    model = TinyCNN()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


class TinyScenes:
    """The MultiLabelDataset protocol over synthetic scenes."""

    name = "tiny"
    label_names = LABELS

    def __init__(self, n: int = 40, seed: int = 7) -> None:
        self._x, self._y = synthetic_scenes(n, seed)

    def __len__(self) -> int:
        return len(self._x)

    def ids(self) -> list[str]:
        return [f"tiny_{i:03d}" for i in range(len(self._x))]

    def labels(self) -> torch.Tensor:
        return self._y.clone()

    def valid(self) -> torch.Tensor:
        return torch.ones_like(self._y)

    def image(self, index: int, size: tuple[int, int]) -> torch.Tensor:
        x = self._x[index]
        if tuple(size) != tuple(x.shape[1:]):
            x = torch.nn.functional.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
        return x.clone()


class OneAtATime(MultiLabelClassifier):
    """``inner`` applied to one image at a time: each image's outputs (and gradients) are, bit for
    bit, those of a batch of one, whatever batch it comes in. Kernels of an ordinary model pick
    their blocking by batch size, so its last bits depend on the batch; with this model, any
    difference between an attack's batch and one-at-a-time results is the attack's own coupling."""

    def __init__(self, inner: MultiLabelClassifier) -> None:
        super().__init__(inner.label_names, inner.input_size)
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.inner(x[i:i + 1]) for i in range(x.shape[0])])
