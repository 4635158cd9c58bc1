"""Background work claimed from database rows: any number of processes share it safely."""
