"""The record: the store (every measurement), git (every candidate) and the read models over them."""
