"""Feature-usage analysis (Table 3): per-image ABCD and bias features, and which of them a trained
model uses beyond what the diagnosis explains (conditional-independence tests, majority vote).

See ``docs/features.md``.
"""

from medattn.analysis.features.extract import COLUMNS, extract_features, image_features

__all__ = ["COLUMNS", "extract_features", "image_features"]
