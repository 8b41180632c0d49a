"""Where state lives: the database engine, the models, migrations, every query (`store`),
the per-email fast SQL path and SQLite's file locks.

May import `campaign.domain` and the leaves. Nothing above this room creates an engine or
writes SQL of its own."""
