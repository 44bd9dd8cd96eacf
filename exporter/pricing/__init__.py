"""Pricing: a request's cost from its tokens, from bundled price data or config overrides."""
