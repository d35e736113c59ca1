"""flowerbed: federated and decentralized learning experiments on Flower."""

__version__ = "0.1.0"
