"""Video: reading, unsupervised motion masks, moving-object proposals and tracks."""
