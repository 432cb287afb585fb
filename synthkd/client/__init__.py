"""Endpoint calls: the client, its cache, limits, retries and accounting."""
