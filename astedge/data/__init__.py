"""Labelled audio: dataset layouts read into one index (class folders, manifests, ESC-50, Speech Commands) and the
procedural sound classes and event recordings of the demo. Read by training, INT8 calibration and measurement.
"""
