"""The shell around a running Herald process: what keeps it (or its processes) going."""
