"""Latency, parity, reports and the CI gate."""
