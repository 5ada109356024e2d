"""The classic one-stage detectors written from their papers (TinySSD, the focal-loss SSD,
the YOLOv2-style head) on one shared base. Imports torch: only head builders import it."""
