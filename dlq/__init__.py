"""The dead letter queue: checksummed segment files of batches that could not be delivered."""
