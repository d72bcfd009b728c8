"""The application layer both account services share: dependencies, the request context,
typed errors, retry on conflict, and the second-factor check. Nothing here knows HTTP."""
