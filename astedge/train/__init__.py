"""Training AST on the user's audio: the loop, clips and augmentation, recipes, CNN teachers, distillation.
"""
