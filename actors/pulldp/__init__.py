"""The pull DP machine: its PullDP component and the data transfer service it downloads
with (HTTP range requests from ranked sources, RDC-style for changed files)."""

from actors.pulldp._agent import JOBS_FOLDER, Progress, PullDPAgent, RunPullJob

__all__ = ["JOBS_FOLDER", "Progress", "PullDPAgent", "RunPullJob"]
