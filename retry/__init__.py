"""The retry process (bounded delay heap); see issue 3. Not part of the walking skeleton."""
