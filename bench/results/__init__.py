"""The result store and what reads it: typed records, the store, queries, statistics, comparison."""
