"""astedge: the Audio Spectrogram Transformer from PyTorch training to real-time TensorRT on the edge."""

__version__ = "0.1.0"
