"""The ways pages go out: the durable outbox, the channel senders and the page texts."""
