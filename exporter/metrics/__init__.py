"""Metrics: the contract, labelled points with bounded labels, the exposition and OTLP push."""
