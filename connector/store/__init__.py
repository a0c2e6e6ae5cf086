"""The store: peewee models over SQLite; nothing outside this package builds SQL."""
