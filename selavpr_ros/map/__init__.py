"""The place map on disk: manifest, SQLite metadata, faiss index and local-feature segments."""

from selavpr_ros.map.index import IndexSpec
from selavpr_ros.map.metadata import Place, PlaceInfo, PlaceTable
from selavpr_ros.map.place_map import PlaceMap, SearchResult, check_extractor

__all__ = ["IndexSpec", "Place", "PlaceInfo", "PlaceMap", "PlaceTable", "SearchResult",
           "check_extractor"]
