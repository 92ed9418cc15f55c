"""Kaldi-compatible fbank, AST's input: the numpy reference (one `FbankConfig` holds every constant), the CUDA
kernel's binding, the CUDA driver API and the on-device pipeline. No torch.
"""
