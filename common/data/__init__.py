"""Data: sample containers, dataset loaders, partitioning, device and server views."""
