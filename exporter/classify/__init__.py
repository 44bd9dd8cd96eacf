"""Classification: which interaction and category each request is; the rules are data."""
