//! Warming a tenant's home connection when its provider is built
//! ([`crate::PostgresOptions::warm_up`]).
//!
//! A server backend's first calls in a schema compile the schema's
//! procedures, plan their statements and load its tables' catalog entries:
//! about ten milliseconds of server CPU per tenant, against a fraction of
//! one for the same calls warm. With tenant affinity a tenant's calls run on
//! its home shard's connections, so those costs fall on each tenant's first
//! orchestration: a burst that starts one orchestration in each of 200
//! tenants ran warm at the one-tenant run's speed, and cold at about twice
//! its time (docs/benchmarks.md, "The 200-tenant burst").
//!
//! A provider built with affinity therefore warms its home connection once,
//! before its build returns: it runs what a client and a runtime call for
//! one orchestration on an instance of its own and rolls it all back. In
//! procedure mode that is one round trip, the procedure `warm_up`
//! (`procedures/warm_up.sql`); in inline mode the same steps with inline
//! mode's statements, which stay prepared and planned on the connection
//! (`src/inline/warm_up.rs`, a round trip per statement, some thirty).
//! Not when the home shard holds more tenants than `tenants_per_connection`:
//! recycling would close the warmed connection.

use std::time::Duration;

use crate::config::PostgresOptions;
use crate::store::Store;

/// Whether a provider with these settings warms its home connection:
/// asked for, tenant affinity (`tenants_at_home` known), no transaction
/// pooler (its server backends are not the provider's own to warm), and a
/// home shard within the recycling bound (`tenants_per_connection`, 0:
/// none). Either SQL mode.
pub(crate) fn wanted(options: &PostgresOptions, tenants_at_home: Option<usize>) -> bool {
    let bound = options.tenants_per_connection;
    options.warm_up
        && !options.transaction_pooler
        && tenants_at_home.is_some_and(|n| bound == 0 || n <= bound)
}

/// How long the warm-up waits for a connection of the home shard before
/// it gives up: a shard busy with a neighbour's work is left cold rather
/// than the build held up.
const ACQUIRE: Duration = Duration::from_secs(1);

/// Warms `store`'s home connection, before the provider's build returns: on
/// a connection of its home shard (never a borrowed one), which then goes
/// straight back to the shard. Kept for the tenant ([`crate::reuse`]), it
/// held a shard of one from a neighbour whose provider was being built at
/// the same moment (the migration check waits in the shard's pool, not in
/// the shard's line, which is what a keep looks at). Run in the background
/// instead, it held the tenant's own first operations up behind it. A
/// failure, no connection within [`ACQUIRE`], or a table lock not granted
/// within a second (the warm-up's `lock_timeout`) is logged and otherwise
/// ignored: the calls it would have made warm are made cold instead.
pub(crate) async fn run(store: &Store) {
    let warmed = store
        .observe("warm_up", async {
            let Ok(conn) = tokio::time::timeout(ACQUIRE, store.pool.acquire_home()).await else {
                return Ok(None);
            };
            let mut flight = crate::pooler::InFlight(Some(conn?));
            let conn = flight.conn()?;
            let ran = crate::pooler::answered(
                store.pool.call_timeout(),
                store.driver.warm_up(store, conn),
            )
            .await;
            flight.settle(&ran);
            Ok(ran?.then_some(()))
        })
        .await;
    match warmed {
        Ok(Some(())) => store.gate.note_warmed(),
        Ok(None) => tracing::debug!(schema = %store.schema, "warm-up skipped or ran in part"),
        Err(e) => tracing::debug!(schema = %store.schema, error = %e, "warm-up failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_within_the_bound_warms_in_either_mode() {
        let on = PostgresOptions::default().tenants_per_connection(32);
        assert!(wanted(&on, Some(10)));
        assert!(wanted(&on, Some(32)));
        assert!(!wanted(&on, Some(33)), "recycling would undo it");
        assert!(!wanted(&on, None), "no affinity");
        assert!(!wanted(&on.clone().warm_up(false), Some(1)));
        assert!(!wanted(&on.clone().transaction_pooler(true), Some(1)));
        let unbounded = PostgresOptions::default().tenants_per_connection(0);
        assert!(wanted(&unbounded, Some(500)));
    }
}
