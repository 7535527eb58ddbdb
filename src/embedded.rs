//! The SQL files compiled into the binary by `build.rs`: `migrations/`,
//! `procedures/` and `inline/`, each as sorted `(file stem, text)` pairs.

include!(concat!(env!("OUT_DIR"), "/embedded_sql.rs"));
