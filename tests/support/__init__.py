"""What the tests share, one module each.

apps          an app spoken to in-process (httpx) or served on loopback; is_problem
cli           the twofa command run as a process of its own on a test's database
bad_inputs    the bad-input matrix's world (apps, users, forged tokens), a case sent and checked
clock         a clock tests move by hand
database      the server admin's SQL (CREATE, DROP DATABASE); the count of events
kafka         a test topic read back from its start
polling       eventually: polling with a deadline, never a bare sleep
relay         the real outbox relay run in-process
samples       a sample of every domain event type, with recognisable secret values
secretsearch  searching text and log records for secrets
seeding       2FA turned on by appending its events directly
servers       where the tests find PostgreSQL and Kafka
settings      one test's settings (its database, cheap argon2, fresh keys, its topic)
totp          TOTP codes from an independent implementation
"""
