"""The AST network (timm DeiT backbone), its config and position grids, safetensors checkpoints, conversions of
the original and Hugging Face layouts, and label lists. Needs torch (except the checkpoint's metadata readers).
"""
