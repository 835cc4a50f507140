"""Multi-label image classification. This module imports no torch: ``infer_task`` asks it about folders."""

LABELS_FILE = "labels.csv"  # a folder of images with this table of paths and label lists is a multi-label set
