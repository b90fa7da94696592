from .datasets import DATASETS, Dataset, DataSpec, Split, load_dataset
from . import sources  # noqa: F401  (registers the builders)
from .preprocessing import Preprocessing

__all__ = ["DATASETS", "Dataset", "DataSpec", "Split", "load_dataset", "Preprocessing"]
