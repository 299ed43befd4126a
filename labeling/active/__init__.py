"""Active learning: query strategies, the labelling simulator, its features and curves."""
