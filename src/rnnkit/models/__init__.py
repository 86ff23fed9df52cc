"""Models built from rnnkit layers: one file per task's model."""

from rnnkit.models.lm import LanguageModel, LMConfig

__all__ = ["LMConfig", "LanguageModel"]
