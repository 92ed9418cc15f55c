"""astedge's device profiles (the TOML files in this folder), installed as the package ``astedge.device_profiles``.

This file only makes the folder importable, so that pip ships the profiles with astedge and
``astedge.deploy.profiles`` finds them in a checkout, an editable install and a wheel alike.
"""
