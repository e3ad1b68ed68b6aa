"""Inference, below training and serving: scoring, the run folder on disk, and `Predictor`.

    score        a model or a run's routed members over encoded rows, without autograd
    runfolder    the one atomic write; writing a trained run's folder; reading and checking it back
    predictor    `Predictor`: a run folder loaded to score raw rows

Training writes run folders through this package; serving, evaluation and the experiments read
them through it. It imports data and models, never training.
"""

from crossctr.inference.predictor import Predictor
from crossctr.inference.runfolder import atomic_file, atomic_write, load_encoder
from crossctr.inference.score import Scores, route_scores, score

__all__ = ["Predictor", "Scores", "atomic_file", "atomic_write", "load_encoder", "route_scores", "score"]
