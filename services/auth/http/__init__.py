"""Auth's HTTP entry points: the API routes, their schemas, and the portal page."""
