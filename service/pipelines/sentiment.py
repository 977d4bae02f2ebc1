"""Sentiment: the classification pipeline (service/pipelines/classification.py) for models of task
"sentiment", whose labels are negative/neutral/positive. Sentiment.Analyze serves them with it, and
Classify serves them too.

The server and the evaluation command both call this class, so published quality is served quality.
"""

from __future__ import annotations

from service.pipelines.classification import ClassificationPipeline, ClassPrediction, TokenWeight

TASK = "sentiment"

# The sentiment answer is the classification answer; the names stay for their callers.
SentimentPrediction = ClassPrediction
__all__ = ["TASK", "SentimentPipeline", "SentimentPrediction", "TokenWeight"]


class SentimentPipeline(ClassificationPipeline):
    tasks = (TASK,)
