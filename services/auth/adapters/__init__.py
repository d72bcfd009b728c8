"""Auth's own adapters: unknown usernames' throttle (SQL), device tokens."""
