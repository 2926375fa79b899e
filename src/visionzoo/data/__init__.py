"""Datasets: the catalogue, in-memory loading, on-device batching and augmentation."""

from visionzoo.data.augment import AugmentConfig
from visionzoo.data.catalogue import CATALOGUE, DatasetSpec
from visionzoo.data.datasets import InMemoryDataset, dataset_names, get_spec, load_dataset
from visionzoo.data.idx import DatasetError, read_idx, write_idx
from visionzoo.data.loader import DeviceLoader, Preprocess

__all__ = [
    "CATALOGUE",
    "AugmentConfig",
    "DatasetError",
    "DatasetSpec",
    "DeviceLoader",
    "InMemoryDataset",
    "Preprocess",
    "dataset_names",
    "get_spec",
    "load_dataset",
    "read_idx",
    "write_idx",
]
