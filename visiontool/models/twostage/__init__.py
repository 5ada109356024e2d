"""Two-stage detector pieces torchvision lacks (imported inside head builders only)."""
