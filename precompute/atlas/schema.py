"""The atlas tables (``ATLAS/atlas.duckdb``), one DDL statement per table.

Names and meanings are documented for users in the README ("The atlas"); later
stages add their tables here. ``SCHEMA_VERSION`` changes whenever a table changes,
so a reader can refuse an atlas it does not understand.
"""

SCHEMA_VERSION = 1

TABLES: dict[str, str] = {
    # key/value facts of the build: schema_version, config_digest, config (JSON), built_at, stages.
    "atlas_info": "CREATE TABLE atlas_info (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # One row per image source: 'real', then each generator by its config name.
    "sources": """CREATE TABLE sources (
        source_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,            -- real | planted | world-model | diffusers
        label TEXT NOT NULL,
        config JSON NOT NULL,          -- the source's or generator's config table
        n_images INTEGER NOT NULL
    )""",
    # One row per real image-caption pair that survived sampling; position is the sample order.
    "items": """CREATE TABLE items (
        item_id TEXT PRIMARY KEY,
        position INTEGER NOT NULL UNIQUE,
        caption TEXT NOT NULL
    )""",
    # Every image in the atlas: the real one of each item and one per generator and item.
    "images": """CREATE TABLE images (
        image_id TEXT PRIMARY KEY,     -- '<source_id>/<item_id>'
        item_id TEXT NOT NULL,
        source_id TEXT NOT NULL,
        path TEXT NOT NULL,            -- relative to the atlas folder
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        flag TEXT                      -- e.g. 'black' when a safety filter blanked the image
    )""",
    # The embedded world's concepts with their prior frequency under the world's Boltzmann prior.
    "world_concepts": """CREATE TABLE world_concepts (
        concept TEXT PRIMARY KEY,
        family TEXT NOT NULL,
        prior_frequency DOUBLE NOT NULL
    )""",
    # Ground truth of the embedded world: which world concepts each image shows.
    "world_annotations": """CREATE TABLE world_annotations (
        image_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        source_id TEXT NOT NULL,
        concept TEXT NOT NULL
    )""",
    # The planted effects of each planted world generator.
    "planted_effects": """CREATE TABLE planted_effects (
        source_id TEXT NOT NULL,
        concept TEXT NOT NULL,
        effect TEXT NOT NULL,          -- suppress | add
        rate DOUBLE NOT NULL,
        replace_with TEXT
    )""",
    # Every item a stage skipped, with a stable reason code and a human detail.
    "skipped": """CREATE TABLE skipped (
        stage TEXT NOT NULL,
        source_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL
    )""",
    # The manifest of every stage run that fed this atlas (config, versions, counts, time, skips).
    "manifests": """CREATE TABLE manifests (
        stage TEXT NOT NULL,
        target TEXT NOT NULL,
        manifest JSON NOT NULL
    )""",
}
