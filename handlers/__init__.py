"""What an event means for the read model: schemas, decoding, routing, per-aggregate upserts.
Handlers receive a connection and a batch; they never commit and never talk to Kafka."""
