//! Worker tag filters under concurrency: a fetch whose filter takes several
//! kinds of item (`Tags` with two or more tags, `DefaultAnd`) holds only the
//! item it claims, so another worker fetching meanwhile gets the next one
//! instead of coming back empty. The interleaving is driven exactly: the
//! first fetch's claim is held by a trigger waiting on an advisory lock the
//! test holds.

use std::collections::HashSet;
use std::time::Duration;

use duroxide::providers::{Provider, TagFilter, WorkItem};
use duroxide_postgres::SqlMode;

use crate::fixtures::{activity, tagged_activity};
use crate::support::{close_gate, in_both_modes, provider_on, someone_waits_on, with_schema};

const LEASE: Duration = Duration::from_secs(30);

in_both_modes!(a_fetch_taking_several_kinds_holds_only_what_it_claims:
    a_fetch_taking_several_kinds_holds_only_what_it_claims_procedures,
    a_fetch_taking_several_kinds_holds_only_what_it_claims_inline; 4);

/// Two workers with the same filter and one item of each kind the filter
/// takes: while the first worker's claim of the older item is held, the
/// second worker's fetch claims the other one. Before, the first fetch
/// row-locked the head of every kind until its commit, and the second came
/// back empty (and, long-polling, slept on a quiet note up to a second).
async fn a_fetch_taking_several_kinds_holds_only_what_it_claims(mode: SqlMode) {
    let filters = [
        (
            "tags",
            TagFilter::tags(["a", "b"]),
            tagged_activity("first", 1, "a"),
            tagged_activity("second", 1, "b"),
        ),
        (
            "default_and",
            TagFilter::default_and(["b"]),
            activity("first", 1),
            tagged_activity("second", 1, "b"),
        ),
        (
            "default_and, the tag first",
            TagFilter::default_and(["b"]),
            tagged_activity("first", 1, "b"),
            activity("second", 1),
        ),
    ];
    for (what, filter, first, second) in filters {
        with_schema("tag_heads", |schema| async move {
            let p = std::sync::Arc::new(provider_on(&schema.pool, &schema.name, mode, true).await);
            p.enqueue_for_worker(first).await.expect("first item");
            p.enqueue_for_worker(second).await.expect("second item");

            let (mut holder, gate) = close_gate(&schema).await;
            schema
                .run_all(&[
                    &format!(
                        "CREATE FUNCTION {{{{schema}}}}.hold_claim() RETURNS trigger \
                         LANGUAGE plpgsql SET lock_timeout = 0 AS $$ \
                         BEGIN PERFORM pg_advisory_xact_lock({gate}); RETURN NULL; END $$"
                    ),
                    "CREATE TRIGGER hold_claim AFTER UPDATE ON {{schema}}.worker_queue \
                     FOR EACH ROW WHEN (NEW.instance_id = 'first' AND NEW.lock_token IS NOT NULL) \
                     EXECUTE FUNCTION {{schema}}.hold_claim()",
                ])
                .await;

            let held = {
                let (p, filter) = (p.clone(), filter.clone());
                tokio::spawn(async move {
                    p.fetch_work_item(LEASE, Duration::ZERO, None, &filter)
                        .await
                })
            };
            crate::support::eventually("the first claim to be held", || {
                someone_waits_on(&schema.pool, gate)
            })
            .await;
            let meanwhile = p
                .fetch_work_item(LEASE, Duration::ZERO, None, &filter)
                .await
                .unwrap_or_else(|e| panic!("{mode}, {what}: second fetch: {e:?}"));
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(gate)
                .execute(&mut holder)
                .await
                .expect("let the gate go");
            let held = held
                .await
                .expect("first fetch task")
                .unwrap_or_else(|e| panic!("{mode}, {what}: first fetch: {e:?}"));

            let instance = |claimed: &Option<(WorkItem, String, u32)>| match claimed {
                Some((WorkItem::ActivityExecute { instance, .. }, _, _)) => Some(instance.clone()),
                _ => None,
            };
            assert_eq!(
                instance(&held).as_deref(),
                Some("first"),
                "{mode}, {what}: the older item goes to the first fetch"
            );
            assert_eq!(
                instance(&meanwhile).as_deref(),
                Some("second"),
                "{mode}, {what}: a fetch while the first claim is held takes the other item"
            );
            let tokens: HashSet<_> = [&held, &meanwhile]
                .into_iter()
                .flatten()
                .map(|(_, token, _)| token.clone())
                .collect();
            assert_eq!(tokens.len(), 2, "{mode}, {what}: two claims");
        })
        .await;
    }
}
