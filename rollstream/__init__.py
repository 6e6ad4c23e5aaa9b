"""rollstream: RL fine-tuning of LLM policies as a stream of rollouts over Kafka.

`rollstream.schemas` is the wire contract (schemas/), `rollstream.services` the stages and
what they share (services/); the folders are the import path."""
