"""The data layer: sources (download, local copies, import), in-memory splits
(``core``), whole-batch loaders and augmentation; ``pipeline`` ties them together."""
