"""The engine: predictor, detection runs, training, evaluation and benchmarks."""
