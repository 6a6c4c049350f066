"""Storage: where tests, outages, coverage, exclusions and the hooks' outbox are kept."""
