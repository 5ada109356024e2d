"""Metrics: pure functions from arrays to numbers (COCO 12 stats, VOC AP50, classification,
multi-label classification, single-object boxes and classes).

No I/O here and no torch: these run on numpy arrays, so scoring a predictions file stays fast
and light. Report plots are drawn by `engine/evaluate/plots.py` through `io/plotting.py`.
"""
