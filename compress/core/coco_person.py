"""The COCO person keypoint conventions, defined once: names, skeleton and left/right mirror."""
from __future__ import annotations

from collections.abc import Sequence

KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
# 1-based keypoint indices, as person_keypoints_*.json writes them.
COCO_SKELETON = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
    (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)


def flip_permutation(names: Sequence[str]) -> list[int]:
    """Index of each keypoint's left/right mirror (`left_x` <-> `right_x`; itself when it has none)."""
    index = {name: i for i, name in enumerate(names)}
    perm = []
    for name in names:
        side, _, rest = name.partition("_")
        partner = {"left": "right", "right": "left"}.get(side)
        perm.append(index.get(f"{partner}_{rest}", index[name]) if partner else index[name])
    return perm


COCO_FLIP = tuple(flip_permutation(KEYPOINT_NAMES))
