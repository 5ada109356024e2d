"""Detection heads, one module each; importing this package registers them all.

Each module builds a `HeadSpec` (how to build the head over a backbone, its layout and
defaults, how to swap class layers, how to configure inference) and registers it. A new head is
one new module here, one name on the import line below, and its tests; nothing else in the
engine learns its name. Import order is listing order.
"""

from visiontool.models.heads import frcnn, frcnn_classic, retinanet, fcos, ssd  # noqa: F401, I001
from visiontool.models.heads import ssdlite, tinyssd, ssd_focal, yolo  # noqa: F401, I001
