"""Looking inside a trained run: curves, task-specific diagnostics, retrieval, feature maps,
written as one HTML report (`selfsup inspect`)."""
