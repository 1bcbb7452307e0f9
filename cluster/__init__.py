"""Cluster launcher: N `llmsim serve` instances under supervisord."""
