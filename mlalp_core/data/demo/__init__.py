"""The bundled demo: multi-label scenes of coloured handwritten digits on real photographs.

Why it exists: the app and the tests need a multi-label task that runs offline on a CPU in
seconds, yet has what the paper's VOC setting has: natural backgrounds, several objects per
image, and label co-occurrence for a label-graph model (ML-GCN) to exploit.

A scene is RGB 3x96x96 in [0,1] (d = 27,648). Its objects are 2 to 4 handwritten digits of
*distinct* classes (labels are the classes present, 10 labels ``DEMO_LABELS``), taken from
scikit-learn's digits set (1,797 8x8 images, 16 grey levels, from the UCI "Optical Recognition
of Handwritten Digits" data). Each digit is upscaled with bicubic interpolation to a random size
of 20..34 px, drawn in its own saturated colour through its intensity as an alpha mask, with a
thin dark halo so that it stays legible on any background. Boxes overlap by at most 8 % of the
smaller one. Backgrounds are random crops (random scale, random horizontal flip) of photographs
that ship inside scikit-image's wheel (PNG only: four colour photographs and three CC0 texture
photographs, the latter tinted), dimmed and partly desaturated.

Label co-occurrence (what ``demo-gcn``'s graph can learn). The number of digits k is 2, 3 or 4
with probabilities 0.35 / 0.40 / 0.25. Classes are added one at a time: a class is drawn
uniformly among the unused ones; with probability 0.8 its *companions* follow it (in random
order, while fewer than k digits are chosen). The companion groups are

    {one, seven}    {three, eight}    {zero, six, nine}

and two, four, five have none. Measured on 50,000 label sets: P(seven | one) = P(one | seven) =
P(eight | three) = 0.77, P(j | i) = 0.66..0.67 within the triple, while each label's base rate
is 0.19 (no companions) to 0.38 (the triple) and P(j | i) across groups is 0.11 to 0.26.
At ML-GCN's threshold 0.4 the graph holds exactly the companion edges
(checked in ``tests/test_demo_data.py``).

Held-out means held out: the digit instances are split per class by a fixed permutation (70 %
train, 30 % test) and each photograph is cut in two along its longer side (first 60 % train,
last 40 % test), so train and test scenes share neither a digit instance nor a background pixel.

Determinism: scene i of (seed, split) comes from its own PCG64 stream keyed by (seed, split, i),
so it does not depend on n, and every pixel operation is elementwise IEEE arithmetic (+, -, *, /,
min, max, floor: no BLAS, no pow or other transcendental functions, whose results may depend on
the CPU), so the same inputs give bit-identical uint8 scenes on any machine with the same
scikit-learn and scikit-image data files.

The parts: :mod:`.task` (labels, sizes, splits, companion groups), :mod:`.resampling`
(elementwise resampling and colour), :mod:`.sources` (digits and photographs, split),
:mod:`.scenes` (sampling and rendering), :mod:`.gallery` (the data sets and the committed
gallery); the names below are the package's interface.
"""

from __future__ import annotations

from .gallery import (
    ASSETS_DIR,
    GALLERY_DIR,
    GALLERY_LABELS,
    GALLERY_MANIFEST,
    GALLERY_SEED,
    DemoGallery,
    DemoScenes,
    gallery_manifest,
    load_gallery,
    make_gallery,
    read_gallery_labels,
)
from .scenes import SceneObject, cooccurrence_counts, generate_scenes, sample_label_set, scene_objects
from .sources import BACKGROUNDS, digit_split, photo_region
from .task import (
    COMPANION_GROUPS,
    COMPANION_PROB,
    DEMO_LABELS,
    DIGIT_SIZES,
    GENERATOR_VERSION,
    HALO,
    MAX_OVERLAP,
    OBJECT_COUNT_PROBS,
    SCENE_SIZE,
    SPLITS,
)

__all__ = [
    "ASSETS_DIR", "BACKGROUNDS", "COMPANION_GROUPS", "COMPANION_PROB", "DEMO_LABELS", "DIGIT_SIZES", "GALLERY_DIR",
    "GALLERY_LABELS", "GALLERY_MANIFEST", "GALLERY_SEED", "GENERATOR_VERSION", "HALO", "MAX_OVERLAP",
    "OBJECT_COUNT_PROBS", "SCENE_SIZE", "SPLITS", "DemoGallery", "DemoScenes", "SceneObject", "cooccurrence_counts",
    "digit_split", "gallery_manifest", "generate_scenes", "load_gallery", "make_gallery", "photo_region",
    "read_gallery_labels", "sample_label_set", "scene_objects",
]
