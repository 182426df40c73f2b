"""Unusual activity in rooms, flagged as it is stored (issue 18): chat floods, spam waves, raids, moderator
abuse, permission churn and gift bursts, evaluated exactly over stored rows in each batch's transaction
(pipeline.detectors.engine says why), stored as alerts (pipeline.storage.alerts)."""

from pipeline.detectors.engine import Detectors
from pipeline.detectors.params import DETECTORS

__all__ = ["DETECTORS", "Detectors"]
