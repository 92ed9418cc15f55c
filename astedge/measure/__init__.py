"""How fast and how good: benchmarks, model costs, accuracy and event metrics, the machine header, doctor.
"""
