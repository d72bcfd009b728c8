"""Events on Kafka: the public contract, the outbox relay, the consumer loop, revocations."""
