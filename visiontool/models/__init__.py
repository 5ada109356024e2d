"""Models: the torchvision zoo, pluggable backbones and heads, and our own classic models.

Submodules register their builders in `visiontool.registry` when imported; nothing here imports
torch at package import time.
"""
