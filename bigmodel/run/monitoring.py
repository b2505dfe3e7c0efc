"""The run's monitoring callbacks under the name configs store (``bigmodel.run.monitoring.AttentionMaps``, and
``bigmodel.monitoring.ProgressLog`` from before the layers): progress and scalars live in ``bigmodel.run.progress``,
the figures of validation examples in ``bigmodel.run.figures``. New code imports those."""

from bigmodel.run.figures import AttentionMaps, MaskedPredictions, RetrievalExamples
from bigmodel.run.progress import BestScoreHParam, ProgressLog, interactive

__all__ = ["AttentionMaps", "BestScoreHParam", "MaskedPredictions", "ProgressLog", "RetrievalExamples", "interactive"]
