"""The atlas tables (``ATLAS/atlas.duckdb``), one DDL statement per table.

Names and meanings are documented for users in the README ("The atlas"); later
stages add their tables here. ``SCHEMA_VERSION`` changes whenever a table changes,
so a reader can refuse an atlas it does not understand.

A finished atlas also records how many rows each table holds (``atlas_info`` key
``row_counts``, JSON, written by the writer at commit): a reader checks them, with the
file's length against the blocks DuckDB says it has, before it serves anything.
"""

SCHEMA_VERSION = 4  # 4: the flags' test and null controls, world_detection, atlas_info.row_counts, feature scales,
# label evidence, activation examples

# atlas_info key of {table: rows} for every table but atlas_info itself (whose rows tests and tools may add to)
ROW_COUNTS = "row_counts"

TABLES: dict[str, str] = {
    # key/value facts of the build: schema_version, config_digest, config (JSON), built_at, stages, row_counts.
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
    # --- the output lens (train, encode, analyze stages) ---
    # One row per SAE concept: its label, UMAP position (one layout for all models) and dead flag.
    "concepts": """CREATE TABLE concepts (
        concept INTEGER PRIMARY KEY,
        label TEXT NOT NULL,           -- the VLM label, else the better scored of caption words and world concept
        label_source TEXT NOT NULL,    -- vlm | caption | world | id ('#<id>': nothing fits)
        label_auroc DOUBLE,            -- the label's evidence: caption_auroc or world_auroc as label_source says
        caption_words TEXT NOT NULL,   -- the caption words that best predict the concept (chosen on half the
                                       -- real images) ...
        caption_auroc DOUBLE,          -- ... and their AUROC on the other half: the count of the words in a
                                       -- caption against the concept firing on its image (0.5 = chance)
        vlm_label TEXT,                -- from the optional VLM endpoint (alpha-masked exemplar)
        world_concept TEXT,            -- embedded world only: the world concept it detects best ...
        world_auroc DOUBLE,            -- ... and how well (AUROC on the real images)
        umap_x REAL NOT NULL,
        umap_y REAL NOT NULL,
        is_dead BOOLEAN NOT NULL,      -- never fires on any image of the atlas
        energy_max DOUBLE NOT NULL     -- its largest energy on any image: the upper edge of energy_histograms
    )""",
    # Embedded world only: per world concept, the SAE concepts that detect it best (AUROC of the concept's energy
    # for the world concept's presence, on the atlas's real images); rank 0 is the lens's detector of it.
    "world_detection": """CREATE TABLE world_detection (
        world_concept TEXT NOT NULL, rank INTEGER NOT NULL, concept INTEGER NOT NULL, auroc DOUBLE NOT NULL
    )""",
    # The concept card's lists, ranked once by the analyze stage: the nearest concepts by decoder cosine ...
    "concept_neighbours": """CREATE TABLE concept_neighbours (
        concept INTEGER NOT NULL, rank INTEGER NOT NULL, neighbour INTEGER NOT NULL, cosine REAL NOT NULL
    )""",
    # ... the top co-occurrence partners per image set: Z^T Z (appendix H) as a cosine, C_ij / sqrt(C_ii C_jj) ...
    "concept_partners": """CREATE TABLE concept_partners (
        source_id TEXT NOT NULL, concept INTEGER NOT NULL, rank INTEGER NOT NULL, partner INTEGER NOT NULL,
        weight REAL NOT NULL
    )""",
    # ... and the images' energies binned on [0, concepts.energy_max] (24 bins; sets where it never fires omitted).
    "energy_histograms": """CREATE TABLE energy_histograms (
        source_id TEXT NOT NULL, concept INTEGER NOT NULL, counts INTEGER[24] NOT NULL
    )""",
    # Images from each quantile band of a concept's energies per image set (below the top exemplars):
    # the firing images ranked by energy, split into 4 bands of equal count, 6 evenly spaced kept per band.
    "activation_examples": """CREATE TABLE activation_examples (
        source_id TEXT NOT NULL, concept INTEGER NOT NULL,
        band TINYINT NOT NULL,         -- 0: the top quarter of the images where the concept fires ... 3: the bottom
        rank SMALLINT NOT NULL,        -- within the band, highest energy first
        item_id TEXT NOT NULL, energy REAL NOT NULL,
        quantile REAL NOT NULL         -- share of the concept's firing images with a higher energy (0 = the top)
    )""",
    # Per-image sparse energies: the sum of a concept's SAE codes over the image's tokens, non-zeros only.
    "energies": """CREATE TABLE energies (
        image_id TEXT NOT NULL,
        source_id TEXT NOT NULL,
        concept INTEGER NOT NULL,
        energy REAL NOT NULL
    )""",
    # Per (generator, concept): the blindspot statistics against the real images (seed 001, section 3), and
    # the test the atlas adds (precompute/analysis/significance.py): a flag needs delta past the paper's
    # threshold *and* q <= the config's analysis.fdr.
    "concept_stats": """CREATE TABLE concept_stats (
        source_id TEXT NOT NULL,
        concept INTEGER NOT NULL,
        e_real DOUBLE NOT NULL,        -- mean energy over the real images
        e_gen DOUBLE NOT NULL,         -- mean energy over the generator's images
        delta DOUBLE NOT NULL,         -- sigmoid((e_gen - e_real) / T)
        relative_delta DOUBLE NOT NULL,-- (e_gen - e_real) / (e_gen + e_real)
        nu_real DOUBLE NOT NULL,       -- share of real images where the concept fires
        nu_gen DOUBLE NOT NULL,
        suppressed BOOLEAN NOT NULL,   -- the flag: delta below the suppressed threshold (0.1) and significant
        exaggerated BOOLEAN NOT NULL,  -- the flag: delta above the exaggerated threshold (0.9) and significant
        suppressed_paper BOOLEAN NOT NULL,  -- delta below the threshold alone (the paper's flag)
        exaggerated_paper BOOLEAN NOT NULL,
        p_value DOUBLE,                -- paired sign-flip test of E_gen = E_real; NULL: not live, or < 20 pairs
        q_value DOUBLE,                -- Benjamini-Hochberg over the generator's live concepts; NULL likewise
        ci_low DOUBLE,                 -- 95% interval of delta (paired bootstrap, or appendix K's bound)
        ci_high DOUBLE,
        significant BOOLEAN NOT NULL,  -- q_value <= analysis.fdr
        delta_sharp DOUBLE NOT NULL,   -- sigmoid((e_gen - e_real) / (T / 2)): T = 0.4 at the paper's 0.8 (Fig. 11)
        PRIMARY KEY (source_id, concept)
    )""",
    "delta_histograms": """CREATE TABLE delta_histograms (
        source_id TEXT NOT NULL, bin INTEGER NOT NULL, low DOUBLE NOT NULL, high DOUBLE NOT NULL, count BIGINT NOT NULL
    )""",
    # Per generator: skewness of delta and its flag counts (the atlas's flags and the paper's thresholds alone).
    "source_summary": """CREATE TABLE source_summary (
        source_id TEXT PRIMARY KEY, skewness DOUBLE, n_suppressed INTEGER, n_exaggerated INTEGER, n_significant INTEGER,
        n_suppressed_paper INTEGER, n_exaggerated_paper INTEGER,
        n_live INTEGER,                -- concepts that fire on some real or generated image (the ones tested)
        n_pairs INTEGER,               -- real-generated pairs the statistics compare (items the generator drew)
        control BOOLEAN                -- the generator is configured as a null control
    )""",
    # The null controls: the real images split in two random halves (control 'real-halves'), and every generator
    # configured with control = true. Both sides draw from the same distribution, so every flag is a false alarm.
    "null_controls": """CREATE TABLE null_controls (
        control TEXT PRIMARY KEY,
        kind TEXT NOT NULL,            -- real-halves | generator
        pairs INTEGER NOT NULL,        -- pairs tested (n // 2 for the halves)
        live INTEGER NOT NULL,
        flagged INTEGER NOT NULL,      -- the atlas's flags (must be 0)
        flagged_paper INTEGER NOT NULL,-- what the paper's thresholds alone flag
        min_q DOUBLE                   -- its smallest q-value
    )""",
    # Pearson r of delta between every pair of generators.
    "model_correlations": """CREATE TABLE model_correlations (
        source_a TEXT NOT NULL, source_b TEXT NOT NULL, pearson DOUBLE
    )""",
    # Per (generator, item): L2 distance of the pair's energy vectors (low: memorization, high: divergence)
    # and section 4.5's mean sigmoid of the element-wise differences.
    "datapoints": """CREATE TABLE datapoints (
        source_id TEXT NOT NULL, item_id TEXT NOT NULL, l2 DOUBLE NOT NULL, mean_sigmoid DOUBLE NOT NULL
    )""",
    # Co-occurrence Z^T Z (appendix H): l0 after thresholding at epsilon, top eigenvalues, and the
    # |cosine| between the real set's and each generator's top eigenvectors.
    "cooccurrence_l0": "CREATE TABLE cooccurrence_l0 (source_id TEXT NOT NULL, epsilon DOUBLE NOT NULL, l0 BIGINT NOT NULL)",
    "cooccurrence_spectrum": """CREATE TABLE cooccurrence_spectrum (
        source_id TEXT NOT NULL, rank INTEGER NOT NULL, eigenvalue DOUBLE NOT NULL
    )""",
    "eigenvector_alignment": """CREATE TABLE eigenvector_alignment (
        source_id TEXT NOT NULL, real_rank INTEGER NOT NULL, gen_rank INTEGER NOT NULL, cosine DOUBLE NOT NULL
    )""",
    # Top images per concept and source by mean code over patch tokens.
    "exemplars": """CREATE TABLE exemplars (
        source_id TEXT NOT NULL, concept INTEGER NOT NULL, rank INTEGER NOT NULL, item_id TEXT NOT NULL,
        score DOUBLE NOT NULL
    )""",
    # Token maps of exemplars (and of the best exemplar's counterparts): uint8 row-major patch grid
    # scaled to [0, 255]; multiply by scale / 255 for the code values.
    "heatmaps": """CREATE TABLE heatmaps (
        source_id TEXT NOT NULL, concept INTEGER NOT NULL, item_id TEXT NOT NULL,
        grid_rows INTEGER NOT NULL, grid_cols INTEGER NOT NULL, scale REAL NOT NULL, heatmap BLOB NOT NULL,
        energy REAL NOT NULL           -- the concept's energy on that image (as in energies; 0 where it does not fire)
    )""",
    # --- the internal lens (internal stage; atlas_info 'internal' describes each generator's SAE) ---
    # One row per scored feature (the coarsest Matryoshka group) of a generator's internal SAE (RAIGen, seed 000).
    "internal_features": """CREATE TABLE internal_features (
        source_id TEXT NOT NULL,       -- the generator
        feature INTEGER NOT NULL,      -- index in the internal SAE (the coarsest group is its first features)
        frequency DOUBLE NOT NULL,     -- nu: share of captured spatial positions where the feature fires
        distinctiveness DOUBLE,        -- d: cosine distance of its activation-weighted semantic centroid to the
                                       -- global centroid; NULL when the feature never fires
        minority DOUBLE,               -- minmax(d) * (1 - minmax(nu)) over the live features; NULL when dead
        kept BOOLEAN NOT NULL,         -- survives the greedy NMS by centroid cosine distance (tau)
        minority_rank INTEGER,         -- 0 = most minority among kept, NULL if not kept
        label TEXT NOT NULL,           -- the world concept (or caption word) its activation goes with most, or ''
        PRIMARY KEY (source_id, feature)
    )""",
    # Every feature of a generator's internal SAE (all groups): the unit of add-mode steering strengths.
    "internal_feature_scales": """CREATE TABLE internal_feature_scales (
        source_id TEXT NOT NULL, feature INTEGER NOT NULL,
        fired BIGINT NOT NULL,         -- captured spatial positions where the feature's code is non-zero
        typical DOUBLE,                -- the 90th percentile of its code where it fires; NULL when it never fires
        PRIMARY KEY (source_id, feature)
    )""",
    # Top generated images of each feature by its mean code per captured position.
    "internal_exemplars": """CREATE TABLE internal_exemplars (
        source_id TEXT NOT NULL, feature INTEGER NOT NULL, rank INTEGER NOT NULL, item_id TEXT NOT NULL,
        score DOUBLE NOT NULL
    )""",
    # The feature's code on every position of each exemplar: uint8 row-major grid like heatmaps (value =
    # byte * scale / 255); none when a capture budget kept only part of the positions.
    "internal_heatmaps": """CREATE TABLE internal_heatmaps (
        source_id TEXT NOT NULL, feature INTEGER NOT NULL, item_id TEXT NOT NULL,
        grid_rows INTEGER NOT NULL, grid_cols INTEGER NOT NULL, scale REAL NOT NULL, heatmap BLOB NOT NULL
    )""",
    # Per output-lens concept, the internal features that drive it most (DiffLens-style): mean integrated
    # gradient of a logistic probe's probability over the images where the concept is present; rank 0 = most.
    "attributions": """CREATE TABLE attributions (
        source_id TEXT NOT NULL, concept INTEGER NOT NULL, rank INTEGER NOT NULL, feature INTEGER NOT NULL,
        score DOUBLE NOT NULL
    )""",
    # Each concept's probe: images where the concept is present (energy > 0) and the held-out AUROC
    # (NULL when no probe was fitted: too few positive or negative images).
    "attribution_probes": """CREATE TABLE attribution_probes (
        source_id TEXT NOT NULL, concept INTEGER NOT NULL, positives INTEGER NOT NULL, auroc DOUBLE,
        PRIMARY KEY (source_id, concept)
    )""",
    # The manifest of every stage run that fed this atlas (config, versions, counts, time, skips).
    "manifests": """CREATE TABLE manifests (
        stage TEXT NOT NULL,
        target TEXT NOT NULL,
        manifest JSON NOT NULL
    )""",
}
