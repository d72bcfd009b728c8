"""What every process stands on: configuration, the database, logs, the clock, outages."""
