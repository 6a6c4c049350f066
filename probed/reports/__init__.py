"""Reports: month figures from the store, rendering, incident evidence."""
