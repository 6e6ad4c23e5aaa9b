"""rollstream: RL for LLM policies as a stream of rollouts over Kafka."""
