"""HTTP: the metrics server, the landing page, the web config (TLS, basic auth), the OTLP receiver."""
