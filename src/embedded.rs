//! The SQL files compiled into the binary by `build.rs`: `migrations/`,
//! `procedures/` (include markers expanded) and `statements/`, each sorted
//! by name.

include!(concat!(env!("OUT_DIR"), "/embedded_sql.rs"));
