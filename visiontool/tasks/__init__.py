"""Tasks, one module each; importing this package registers them all (registry kind "task").

`detect` (boxes and classes), `classify` (one class per image), `single` (the largest object:
one box and class per image) and `multilabel` (every class present, per-class sigmoid). Each
module builds a `TaskSpec` (`visiontool.tasks.spec`): how targets are made from a data set, the
loss when the model does not compute it, the validation and eval numbers, how a prediction
becomes a result. The engine asks the spec; a new task is one new module here and its name on
the import line below. Sits below the engine (which uses it) and above models, data and
metrics (which it uses).
"""

from visiontool.tasks import detect, classify, single, multilabel  # noqa: F401, I001
