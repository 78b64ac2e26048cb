"""lth-compress: lottery tickets for torchvision R-CNN detectors."""
import os

# SparseML / SparseZoo / DeepSparse look up an analytics host on import unless this is set.
os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

__version__ = "0.1.0"
