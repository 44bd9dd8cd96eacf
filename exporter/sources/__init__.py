"""Usage sources: one module per source."""
