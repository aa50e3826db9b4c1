"""Moving data: Kafka clients, schemas, dead-letter routing, windowing, sources, simulator, CLI."""
