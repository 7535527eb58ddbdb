//! Worker tag filters under concurrency: a fetch whose filter takes several
//! kinds of item (`Tags` with two or more tags, `DefaultAnd`) holds only the
//! item it claims, so another worker fetching meanwhile gets the next one
//! instead of coming back empty. The interleaving is driven exactly: the
//! first fetch's claim is held by a trigger waiting on an advisory lock the
//! test holds.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use duroxide::providers::{Provider, ProviderError, TagFilter, WorkItem};
use duroxide_postgres::{PostgresProvider, SqlMode};

use crate::fixtures::{activity, tagged_activity};
use crate::support::{
    TestSchema, close_gate, in_both_modes, provider_on, someone_waits_on, with_schema,
};

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
            let p = Arc::new(provider_on(&schema.pool, &schema.name, mode, true).await);
            p.enqueue_for_worker(first).await.expect("first item");
            p.enqueue_for_worker(second).await.expect("second item");

            let held = hold_first_claim(&schema, &p, &filter).await;
            let meanwhile = p
                .fetch_work_item(LEASE, Duration::ZERO, None, &filter)
                .await
                .unwrap_or_else(|e| panic!("{mode}, {what}: second fetch: {e:?}"));
            let held = held
                .release()
                .await
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

/// What a fetch of `provider` with `filter` claims (the item, its token,
/// its attempts), or the error it met.
type Claimed = Result<Option<(WorkItem, String, u32)>, ProviderError>;

/// A fetch whose claim of instance `first`'s item waits on the test's
/// gate, row locks held ([`hold_first_claim`]).
struct HeldClaim {
    holder: sqlx::PgConnection,
    gate: i64,
    fetch: tokio::task::JoinHandle<Claimed>,
}

impl HeldClaim {
    /// Opens the gate and returns what the held fetch claimed.
    async fn release(mut self) -> Claimed {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.gate)
            .execute(&mut self.holder)
            .await
            .expect("let the gate go");
        self.fetch.await.expect("held fetch task")
    }
}

/// Closes the test's gate, makes the claim of instance `first`'s item wait
/// on it (a trigger, with no lock timeout of its own), and starts a fetch
/// with `filter` that takes it: returned once that claim waits.
async fn hold_first_claim(
    schema: &TestSchema,
    provider: &Arc<PostgresProvider>,
    filter: &TagFilter,
) -> HeldClaim {
    let (holder, gate) = close_gate(schema).await;
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
    let fetch = {
        let (p, filter) = (provider.clone(), filter.clone());
        tokio::spawn(async move {
            p.fetch_work_item(LEASE, Duration::ZERO, None, &filter)
                .await
        })
    };
    crate::support::eventually("the first claim to be held", || {
        someone_waits_on(&schema.pool, gate)
    })
    .await;
    HeldClaim {
        holder,
        gate,
        fetch,
    }
}

/// Items a1, b1, a2 of tags a and b, in that order, and a1's claim held:
/// a `Tags({a, b})` fetch then walks tag a past a1 and takes a2, though b1
/// is older, and must say that more may be taken (b1), so that a waiting
/// worker is woken instead of sleeping on a quiet note. Read from the
/// procedure's own row (procedure mode: inline mode runs the same
/// candidate statement, and `more` is not visible through the provider).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_later_item_taken_past_a_held_one_says_more_follows() {
    with_schema("tag_more", |schema| async move {
        let p = Arc::new(
            provider_on(&schema.pool, &schema.name, SqlMode::StoredProcedures, true).await,
        );
        for item in [
            tagged_activity("first", 1, "a"),
            tagged_activity("second", 1, "b"),
            tagged_activity("third", 1, "a"),
        ] {
            p.enqueue_for_worker(item).await.expect("enqueue");
        }
        let held = hold_first_claim(&schema, &p, &TagFilter::tags(["a", "b"])).await;
        let mut tx = schema.pool.begin().await.expect("begin");
        let (work_item, more): (String, bool) = sqlx::query_as(schema.statement(
            "SELECT work_item, more FROM {{schema}}.fetch_work_item{{suffix}}(\
               p_lock_timeout_ms => 30000, p_tag_mode => 'tags', p_tags => ARRAY['a', 'b'], \
               p_owner_id => NULL, p_session_lock_ms => 30000, p_next_due => true, \
               p_floor_ms => NULL, p_next_floor_margin_ms => NULL)",
        ))
        .fetch_one(&mut *tx)
        .await
        .expect("fetch_work_item");
        tx.rollback().await.expect("rollback");
        held.release().await.expect("first fetch");
        assert!(work_item.contains("third"), "a2 is taken: {work_item}");
        assert!(more, "b1 may be taken too");
    })
    .await;
}
