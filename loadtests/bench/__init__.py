"""``make bench``: what telemetry costs per request, measured in one run against baselines."""
