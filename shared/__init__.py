"""twofa's shared code: events and their store, the outbox relay, the Kafka consumer loop,
crypto, configuration and logging. Every service builds on these modules."""
