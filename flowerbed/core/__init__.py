"""The core: arrays, records, errors, parameters, import paths, RNG streams, the wire.

It imports nothing else of flowerbed; every other layer builds on it.
"""
