"""twofa's shared code, one layer a folder (each imports only the ones below it):

- ``devtools``: the development stack's servers, keys and seeding (never in production).
- ``web``: the HTTP shell every service runs in: problems, middleware, OpenAPI, bearer auth.
- ``app``: what use cases share: dependencies, context, typed errors, the second-factor check.
- ``messaging``: integration events and the public contract, Kafka, the relay, the consumer loop.
- ``eventstore``: the append-only store, its registry, repositories, snapshots, stream names.
- ``platform``: configuration, database pools, logs, the clock, background tasks, outages.
- ``security``: crypto, TOTP, recovery codes, passwords, signing keys and tokens.
- ``domain``: the pure rules: events and the Account and TwoFactor aggregates.
"""
