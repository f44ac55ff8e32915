"""Alembic's environment for every collabnet migration history.

It is only ever run through ``collabnet_kit.migrations``, which hands over an open connection,
the history's version table and, for autogenerate, the metadata to compare with.
"""

from alembic import context

config = context.config
context.configure(
    connection=config.attributes["connection"],
    target_metadata=config.attributes.get("target_metadata"),
    version_table=config.attributes["version_table"],
    include_name=config.attributes.get("include_name"),
    render_as_batch=True,  # SQLite alters tables by copying them; batch mode does that for us
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
