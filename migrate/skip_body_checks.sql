-- skip_body_checks: sent before the procedure files of a batch. PostgreSQL
-- otherwise validates each function body as it is created (parsing every
-- plpgsql statement), about a twelfth of the server's CPU while installing
-- a new tenant. The bodies are the embedded files, identical on every
-- schema (checksums), and the tests run each procedure's language
-- validator on them (`every_installed_procedure_passes_its_languages_validator`);
-- pg_dump's restores skip the check the same way. Lasts until the
-- transaction ends.
SET LOCAL check_function_bodies = off;
