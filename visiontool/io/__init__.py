"""Input/output at the edges: images, drawing, result writers, checkpoints and weights."""
