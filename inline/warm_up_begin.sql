-- warm_up_begin: inline mode's warm-up (src/inline/warm_up.rs), first
-- statement of its transaction, which is rolled back at the end. Waits at
-- most a second for a table lock from here on (as procedures/warm_up.sql
-- pins lock_timeout), and reads the database clock: the warm-up's start
-- message is visible from the epoch on, its activity looked for from now on.
-- Rendered once per provider (crate::inline::InlineSql).
SELECT pg_catalog.set_config('lock_timeout', '1s', true) AS lock_timeout,
       {{now_ms}} AS now_ms
