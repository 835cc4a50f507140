"""Data readers: discover a dataset's layout, read and check its files, split and transform it."""
