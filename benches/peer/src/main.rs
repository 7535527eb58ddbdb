//! `peer-load`: the load tool (`examples/load.rs`) with one more mode,
//! `peer`, served by the peer provider `duroxide-pg` (its defaults, its own
//! schema), so its figures and ours come from the same scenario, server and
//! machine in one run. Arguments are the load tool's; `--modes` also takes
//! `peer` (default: `procedures,inline,peer`). Prints the ratio
//! procedures/peer per concurrency.

use std::sync::Arc;

use duroxide::providers::Provider;

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

fn main() -> Result<(), load::BoxError> {
    load::run(Some(peer))
}
