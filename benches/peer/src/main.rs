//! `peer-load`: the load tool (`examples/load.rs`) with two more modes, so
//! their figures and ours come from the same scenario and machine in one run:
//!
//! * `peer`: the peer provider `duroxide-pg` (its defaults, its own schema
//!   on the same server);
//! * `memory`: a provider that keeps the scenario's state in the tool's own
//!   process ([`memory`]): no server, no statements, no serialization. What
//!   it reaches is the ceiling the runtime, the client's status polling and
//!   the scenario's activity leave any provider on this machine. Its
//!   statement and backend CPU columns read zero.
//!
//! Arguments are the load tool's; `--modes` also takes `peer` and `memory`
//! (default: `procedures,inline,peer,memory`). Prints the ratio of
//! procedure mode to each.

use std::sync::Arc;

use duroxide::providers::Provider;

#[allow(dead_code)]
#[path = "../../../examples/load.rs"]
mod load;
mod memory;

/// The peer provider on `schema` (created and migrated by the peer itself).
fn peer(url: String, schema: String) -> load::ProviderFuture {
    Box::pin(async move {
        let provider = duroxide_pg::PostgresProvider::new_with_schema(&url, Some(&schema))
            .await
            .map_err(|e| -> load::BoxError { e.into() })?;
        Ok(Arc::new(provider) as Arc<dyn Provider>)
    })
}

/// The in-memory provider. The load tool asks for a run's runtime provider,
/// then for its client's; both must see one store, so the first call of a
/// pair makes it and the second gets the same.
fn memory(_url: String, _schema: String) -> load::ProviderFuture {
    static PENDING: std::sync::Mutex<Option<Arc<memory::MemoryProvider>>> =
        std::sync::Mutex::new(None);
    Box::pin(async move {
        let mut pending = PENDING
            .lock()
            .map_err(|_| "memory provider registry poisoned")?;
        let provider = match pending.take() {
            Some(made) => made,
            None => {
                let made = Arc::new(memory::MemoryProvider::default());
                *pending = Some(made.clone());
                made
            }
        };
        Ok(provider as Arc<dyn Provider>)
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
