"""The daemon: lifecycle, scheduler, runner, metrics and systemd notification (I/O shells)."""
