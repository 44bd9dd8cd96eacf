"""The SQLite ledger: store (dedupe, merge, offsets), durable series, and the ingest into it."""
