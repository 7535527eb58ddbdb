-- pin: the first statement of every batch migrate.rs sends. Every function
-- and operator the batch names then resolves in pg_catalog, whatever the
-- connection's search_path holds (a hostile `format(text, text)` in a
-- schema on it never runs); `{{schema}}` names are always qualified. Lasts
-- until the (explicit or implicit) transaction ends.
SET LOCAL search_path = pg_catalog, pg_temp;
