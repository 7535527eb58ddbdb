//! `peer-load`: the load tool (`examples/load.rs`) with two more modes, so
//! their figures and ours come from the same scenario and machine in one run:
//!
//! * `peer`: the peer provider `duroxide-pg` (its defaults, its own schema
//!   on the same server);
//! * `memory`: duroxide's own SQLite provider on an in-memory database, in
//!   the load tool's process. No server, no network: what the runtime, the
//!   client and the scenario's activity reach on this machine with storage
//!   that costs next to nothing, the ceiling any PostgreSQL provider works
//!   under. Its statement and backend CPU columns read zero or n/a.
//!
//! Arguments are the load tool's; `--modes` also takes `peer` and `memory`
//! (default: `procedures,inline,peer,memory`). Prints the ratio of
//! procedure mode to each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use duroxide::providers::Provider;
use duroxide::providers::sqlite::SqliteProvider;

#[allow(dead_code)]
#[path = "../../../examples/load.rs"]
mod load;

/// The peer provider on `schema` (created and migrated by the peer itself).
fn peer(url: String, schema: String) -> load::ProviderFuture {
    Box::pin(async move {
        let provider = duroxide_pg::PostgresProvider::new_with_schema(&url, Some(&schema))
            .await
            .map_err(|e| -> load::BoxError { e.into() })?;
        Ok(Arc::new(provider) as Arc<dyn Provider>)
    })
}

/// Providers made for a run's runtime, waiting for its client's call.
static PENDING: Mutex<Option<HashMap<String, Arc<dyn Provider>>>> = Mutex::new(None);
/// Numbers the in-memory databases, so no run sees another's instances.
static DATABASES: AtomicU64 = AtomicU64::new(0);

/// duroxide's SQLite provider on a fresh in-memory database. The load tool
/// asks for a run's runtime provider, then for its client's: the first call
/// for `schema` makes the database, the second gets the same provider, so
/// both see one store, as they would one PostgreSQL schema.
fn memory(_url: String, schema: String) -> load::ProviderFuture {
    Box::pin(async move {
        let waiting = PENDING
            .lock()
            .map_err(|_| "memory provider registry poisoned")?
            .get_or_insert_with(HashMap::new)
            .remove(&schema);
        if let Some(provider) = waiting {
            return Ok(provider);
        }
        let n = DATABASES.fetch_add(1, Ordering::Relaxed);
        let url = format!("sqlite:file:{schema}_{n}?mode=memory&cache=shared");
        let provider: Arc<dyn Provider> = Arc::new(SqliteProvider::new(&url, None).await?);
        PENDING
            .lock()
            .map_err(|_| "memory provider registry poisoned")?
            .get_or_insert_with(HashMap::new)
            .insert(schema, provider.clone());
        Ok(provider)
    })
}

fn main() -> Result<(), load::BoxError> {
    load::run(&[
        load::Extra {
            name: "peer",
            factory: peer,
        },
        load::Extra {
            name: "memory",
            factory: memory,
        },
    ])
}
