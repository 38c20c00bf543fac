"""The event-consumer process: settings, CLI, the consumer loop, offsets, dead-lettering."""
