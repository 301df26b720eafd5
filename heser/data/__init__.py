"""Data: media reading, Fig. 4 masks, WebDataset shards and the sample index."""
