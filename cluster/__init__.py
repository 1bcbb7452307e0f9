"""Cluster launcher: N `llmsim serve` instances under supervisord."""


class ClusterError(Exception):
    """A problem the user can fix; the CLI prints it as one sentence, without a traceback."""
