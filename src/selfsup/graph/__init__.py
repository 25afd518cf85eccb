"""The transitive-invariance graph: mining edges among video patches (`selfsup graph`)."""
