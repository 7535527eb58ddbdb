//! A tenant whose table another session holds exclusively (a `VACUUM
//! FULL`, a long migration's `ALTER TABLE`, a `LOCK TABLE` left open) does
//! not hold up the status of the others: the operator's read waits a
//! moment for it, reports that tenant's queues as not read, and reads the
//! rest; `unreadable` fails the same way instead of waiting. Without a bound, `status --all` hung for as long as the lock
//! lasted, and meanwhile held its batch-mates' tables, so their own
//! migrations queued behind it.

use duroxide_postgres::{sqlstate, tenants};

use super::name;
use crate::support::{hold_table, reading_every_tenant, release_table, with_schemas};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_tenant_is_reported_and_the_others_are_read() {
    with_schemas("ten_locked", 2, |schemas| async move {
        let [locked, free] = &schemas[..] else {
            unreachable!()
        };
        locked.provider().await;
        free.provider().await;
        // A read of every tenant on the database: none of another test at
        // the same time (its locks and ours would queue behind each other).
        let _every = reading_every_tenant().await;
        let holder = hold_table(locked, "worker_queue", "ACCESS EXCLUSIVE").await;

        // The guard is a bound on a hang, not a speed target.
        let guard = std::time::Duration::from_secs(120);
        let everything = tokio::time::timeout(guard, tenants::status_all(&free.pool))
            .await
            .expect("status_all waited for the lock")
            .expect("status_all");
        let outcome = |schema| {
            everything
                .iter()
                .find(|o| o.schema == schema)
                .unwrap_or_else(|| panic!("{schema} not listed"))
        };
        let held = outcome(name(locked))
            .result
            .as_ref()
            .expect_err("the locked tenant's queues were read");
        assert_eq!(
            held.sqlstate().as_deref(),
            Some(sqlstate::LOCK_NOT_AVAILABLE),
            "{held}"
        );
        assert!(held.to_string().contains(&locked.name), "{held}");
        let read = outcome(name(free))
            .result
            .as_ref()
            .expect("the free tenant");
        assert!(read.queues.is_some(), "{read:?}");

        let alone = tokio::time::timeout(guard, tenants::status(&free.pool, &name(locked)))
            .await
            .expect("status waited for the lock")
            .expect_err("the locked tenant's queues were read");
        assert_eq!(
            alone.sqlstate().as_deref(),
            Some(sqlstate::LOCK_NOT_AVAILABLE),
            "{alone}"
        );

        let listing = tokio::time::timeout(guard, tenants::unreadable(&free.pool, &name(locked)))
            .await
            .expect("unreadable waited for the lock")
            .expect_err("the locked tenant's queues were read");
        assert_eq!(
            listing.sqlstate().as_deref(),
            Some(sqlstate::LOCK_NOT_AVAILABLE),
            "{listing}"
        );

        release_table(holder).await;
        let after = tenants::status(&free.pool, &name(locked))
            .await
            .expect("status once the lock is gone");
        assert!(after.queues.is_some(), "{after:?}");
    })
    .await;
}
