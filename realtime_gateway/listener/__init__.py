"""Stage 3, the queue message and the sideband listener that attaches to each call."""
