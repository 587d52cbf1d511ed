"""Persistence: the catalog (SQLite), the artifact store and the data shards."""

from .artifacts import ArtifactStore
from .catalog import Catalog, ids_hash
from .store import Store, check_name

__all__ = ["ArtifactStore", "Catalog", "Store", "check_name", "ids_hash"]
