"""The published face of the daemon: the status page (``GET /status``) and badges."""
