"""Prediction: `visiontool.predict` (a stream of results) and `visiontool detect` (files).

One job per module, data flowing down the list:
- `stream`: inputs (paths, plans, decoded images) -> decoded uint8 images, in input order.
- `inflight`: `map_in_order`, several batches in model threads, results in input order.
- `predictor`: a loaded model on batches of images (preprocess -> model -> postprocess).
- `pipeline`: `stream_results` ties those into one generator of `ImageResult`s; `predict`.
- `sinks`: `ResultSink`, the writer thread that draws and writes results.
- `detect`: `DetectConfig` and `run_detect`, which drains `stream_results` into a sink.
"""
