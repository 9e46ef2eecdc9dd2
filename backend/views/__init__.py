"""One module per page family: the data function that feeds its page, its JSON twin and its fragments.

``overview``, ``explorer``, ``concept`` (the concept card: ``concept_index`` holds the
card's tables in memory, ``concept_html`` builds its repeated parts), ``rankings``,
``compare``, ``datapoints``, ``cooccurrence``, ``frequency``, ``internal``. The
routers in ``app/routes/`` parse parameters and call these; nothing else does.
"""
