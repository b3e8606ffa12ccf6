"""The kafka source: a consumer-group member with acknowledged offsets."""
