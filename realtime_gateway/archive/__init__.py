"""Stage 4, the call archive in Table Storage: rows, the batched writer, the hash chain, summaries."""
