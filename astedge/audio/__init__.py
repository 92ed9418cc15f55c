"""Audio in: decoding files at any rate and channel count (soundfile + soxr) and live capture (microphone,
replayed files, raw PCM on stdin). numpy only, no torch.
"""
