"""The dispatcher: batches entries once for every sink; owns the checkpoint file."""
