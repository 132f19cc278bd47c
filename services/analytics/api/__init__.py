"""REST: operator reports under /v1/analytics."""
