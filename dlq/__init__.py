"""The dead letter queue writer; see issue 3. Not part of the walking skeleton."""
