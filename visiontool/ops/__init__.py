"""Pure tensor operations on boxes and anchors: arrays in, arrays out, no I/O or device choice.

`boxes` holds conversions, IoU and box encoding helpers built on torchvision.ops; `anchors` holds
the multibox anchor scheme (prior, assignment, targets, detection) and Faster R-CNN grid anchors.
"""
