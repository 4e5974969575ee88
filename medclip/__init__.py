"""medclip: medical image-report contrastive learning."""

__version__ = "0.1.0"
__all__ = ["__version__"]
