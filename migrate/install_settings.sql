-- install_settings: sent before the procedure files of a batch; both last
-- until the transaction ends.
--
-- PostgreSQL otherwise validates each function body as it is created
-- (parsing every plpgsql statement), about a twelfth of the server's CPU
-- while installing a new tenant. The bodies are the embedded files,
-- identical on every schema (checksums), and the tests run each
-- procedure's language validator on them
-- (`every_installed_procedure_passes_its_languages_validator`); pg_dump's
-- restores skip the check the same way.
SET LOCAL check_function_bodies = off;
-- The larger procedures' source text (pg_proc.prosrc) is compressed as it
-- is stored: with pglz, a third of CREATE FUNCTION's CPU. lz4, where the
-- server was built with it (PostgreSQL 14 and later), compresses it for a
-- fraction of that and decompresses it faster when a session first calls
-- the procedure. The SELECT sets nothing on a server without lz4.
SELECT pg_catalog.set_config('default_toast_compression', 'lz4', true)
  FROM pg_catalog.pg_settings
 WHERE name OPERATOR(pg_catalog.=) 'default_toast_compression'
   AND 'lz4' OPERATOR(pg_catalog.=) ANY (enumvals);
