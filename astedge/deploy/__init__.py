"""From checkpoint to device: ONNX export (FP32, FP16, INT8), TensorRT engine builds, device profiles, Triton.
"""
