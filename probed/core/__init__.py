"""The pure core: accounting, outages, maintenance windows, events, time helpers. No I/O."""
