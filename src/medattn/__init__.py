"""medattn: rigorous studies of self-attention in medical image classification."""

__version__ = "0.1.0"
