"""DRS: database replication between the sites of a hierarchy."""

from actors.drs._drs import Drs
from actors.drs._messages import ReplicationBatch

__all__ = ["Drs", "ReplicationBatch"]
