"""Reports from the ledger: calendar periods, sessions, 5-hour blocks, budgets, explain."""
