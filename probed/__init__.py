"""probed: measure mail and web hosting availability as hosting SLAs define it."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("probed-sla")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+source"
