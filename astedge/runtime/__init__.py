"""Running a model on audio without torch: backends (TensorRT, ONNX Runtime, torch), windows over files and
streams, scores, the event decision layer and what the terminal shows.
"""
