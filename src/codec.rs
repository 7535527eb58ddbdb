//! Conversions between duroxide's types and the values the SQL layer binds
//! and returns: serialized events and work items, durations in milliseconds,
//! and the text checks PostgreSQL needs.

use std::time::{Duration, Instant};

use duroxide::Event;
use duroxide::providers::WorkItem;

use crate::error::{PostgresProviderError, Result};

/// How long a claimed item this build cannot decode (a newer duroxide's
/// item during a rolling upgrade, or a row written by hand) stays out of
/// sight once given back, its attempt not counted: the runtime retries a
/// failed fetch after 100 ms, each dispatcher slot of every process, so an
/// item given back at once would be claimed and given back ten times a
/// second per slot for as long as it stays. duroxide's runtime sets an
/// orchestration it cannot run aside for the same second.
pub(crate) const UNREADABLE_SET_ASIDE: Duration = Duration::from_secs(1);

/// The longest duration bound into a statement, in milliseconds (about 36
/// million years). The statements add durations to clock readings (a lease,
/// a delay, an extension; up to five settle times), which must stay inside
/// `bigint`: a longer one means the same, "as long as there is", instead of
/// an out-of-range error.
const MAX_MILLIS: i64 = i64::MAX / 8;

/// A duration in whole milliseconds, saturating at [`MAX_MILLIS`].
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).map_or(MAX_MILLIS, |ms| ms.min(MAX_MILLIS))
}

/// The start of one claim attempt, from which the leases it takes count.
///
/// A fetch asked for `lock_timeout` of ownership when it was called; the
/// runtime's lock bookkeeping (and duroxide's conformance suite) count from
/// then. Waiting for a pooled connection or for the earlier statements of an
/// inline attempt must not stretch the lease past that, or a crashed
/// holder's item stays locked longer than its owner was promised to hold it.
/// The wait of a long poll is not part of an attempt: each attempt after a
/// wake-up starts its own clock.
#[derive(Clone, Copy)]
pub(crate) struct AttemptClock(Instant);

impl AttemptClock {
    /// Starts the clock of an attempt.
    pub(crate) fn start() -> Self {
        AttemptClock(Instant::now())
    }

    /// What is left of a `lock_timeout` lease taken now, in milliseconds: the
    /// timeout less the time since the attempt began, but never less than half
    /// of it, so a stalled attempt still hands out a usable lease.
    pub(crate) fn lease_ms(self, lock_timeout: Duration) -> i64 {
        millis(
            lock_timeout
                .saturating_sub(self.0.elapsed())
                .max(lock_timeout / 2),
        )
    }
}

/// A fingerprint of the parameters that decide what a fetch may claim, so
/// fetches with the same ones can share what an empty fetch learned (see
/// `crate::notify`).
pub(crate) fn fetch_key(params: &impl std::hash::Hash) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(params)
}

/// An optional delay in milliseconds (`None` and zero both mean "now").
pub(crate) fn delay_millis(d: Option<Duration>) -> i64 {
    d.map_or(0, millis)
}

/// A `u64` id as PostgreSQL `bigint`, rejecting values that do not fit.
pub(crate) fn to_i64(field: &str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| {
        PostgresProviderError::invalid_input(field, format!("{value} exceeds bigint range"))
    })
}

/// A `bigint` read back as `u64`, rejecting negatives.
pub(crate) fn to_u64(field: &str, value: i64) -> Result<u64> {
    u64::try_from(value)
        .map_err(|_| PostgresProviderError::decode(field, format!("negative value {value}")))
}

/// Rejects strings PostgreSQL `text` cannot hold (the NUL character), naming
/// the field, before anything is sent.
pub(crate) fn check_text<'a>(field: &str, value: &'a str) -> Result<&'a str> {
    if value.contains('\0') {
        return Err(PostgresProviderError::invalid_input(
            field,
            "contains a NUL character, which PostgreSQL text cannot store",
        ));
    }
    Ok(value)
}

/// The longest id accepted, in bytes: instance ids (and a parent's), session
/// ids and KV keys, the text columns that sit in btree indexes.
///
/// A btree entry holds at most 2,704 bytes; the narrowest index here, the
/// history key `(instance_id, execution_id, event_id)`, refuses incompressible
/// ids from about 2,676 bytes, the others at slightly different lengths. An id
/// between those bounds would be accepted by one write and refused by a later
/// one (a turn's history insert), failing that turn forever. 1,024 bytes keeps
/// every index, including `kv_store (instance_id, key)` with both at the limit,
/// well clear of the bound, and is checked before anything is written.
pub const MAX_ID_BYTES: usize = 1024;

/// [`check_text`], and refuses an id over [`MAX_ID_BYTES`], naming the field.
pub(crate) fn check_id<'a>(field: &str, value: &'a str) -> Result<&'a str> {
    if value.len() > MAX_ID_BYTES {
        return Err(PostgresProviderError::invalid_input(
            field,
            format!(
                "{} bytes exceeds the id limit of {MAX_ID_BYTES} bytes (duroxide_postgres::MAX_ID_BYTES)",
                value.len()
            ),
        ));
    }
    check_text(field, value)
}

/// Serializes a work item to the JSON text stored in a queue.
pub(crate) fn encode_work_item(item: &WorkItem) -> Result<String> {
    serde_json::to_string(item)
        .map_err(|e| PostgresProviderError::invalid_input("work_item", e.to_string()))
}

/// Parses a queued work item.
pub(crate) fn decode_work_item(text: &str) -> Result<WorkItem> {
    serde_json::from_str(text).map_err(|e| PostgresProviderError::decode("work item", e))
}

/// Serializes a history event.
pub(crate) fn encode_event(event: &Event) -> Result<String> {
    serde_json::to_string(event)
        .map_err(|e| PostgresProviderError::invalid_input("history event", e.to_string()))
}

/// Parses a stored history event.
pub(crate) fn decode_event(text: &str) -> Result<Event> {
    serde_json::from_str(text).map_err(|e| PostgresProviderError::decode("history event", e))
}

/// Parses a list of stored history events, failing on the first bad one.
pub(crate) fn decode_events(rows: &[String]) -> Result<Vec<Event>> {
    rows.iter().map(|text| decode_event(text)).collect()
}

/// The event's variant name (`OrchestrationStarted`, `ActivityScheduled`, ...),
/// stored next to the event for SQL-side filtering and statistics. Named
/// per variant: formatting the event with `Debug` and cutting the name off
/// copied its whole payload (an activity's result, an orchestration's
/// output) once more on every ack and append.
pub(crate) fn event_type(event: &Event) -> String {
    use duroxide::EventKind as K;
    let name = match &event.kind {
        K::OrchestrationStarted { .. } => "OrchestrationStarted",
        K::OrchestrationCompleted { .. } => "OrchestrationCompleted",
        K::OrchestrationFailed { .. } => "OrchestrationFailed",
        K::ActivityScheduled { .. } => "ActivityScheduled",
        K::ActivityCompleted { .. } => "ActivityCompleted",
        K::ActivityFailed { .. } => "ActivityFailed",
        K::ActivityCancelRequested { .. } => "ActivityCancelRequested",
        K::TimerCreated { .. } => "TimerCreated",
        K::TimerFired { .. } => "TimerFired",
        K::ExternalSubscribed { .. } => "ExternalSubscribed",
        K::ExternalEvent { .. } => "ExternalEvent",
        K::OrchestrationChained { .. } => "OrchestrationChained",
        K::SubOrchestrationScheduled { .. } => "SubOrchestrationScheduled",
        K::SubOrchestrationCompleted { .. } => "SubOrchestrationCompleted",
        K::SubOrchestrationFailed { .. } => "SubOrchestrationFailed",
        K::SubOrchestrationCancelRequested { .. } => "SubOrchestrationCancelRequested",
        K::OrchestrationContinuedAsNew { .. } => "OrchestrationContinuedAsNew",
        K::OrchestrationCancelRequested { .. } => "OrchestrationCancelRequested",
        K::ExternalSubscribedCancelled { .. } => "ExternalSubscribedCancelled",
        K::QueueSubscribed { .. } => "QueueSubscribed",
        K::QueueEventDelivered { .. } => "QueueEventDelivered",
        K::QueueSubscriptionCancelled { .. } => "QueueSubscriptionCancelled",
        K::CustomStatusUpdated { .. } => "CustomStatusUpdated",
        K::KeyValueSet { .. } => "KeyValueSet",
        K::KeyValueCleared { .. } => "KeyValueCleared",
        K::KeyValuesCleared => "KeyValuesCleared",
        // Variants behind duroxide's test features, which another crate
        // of the build may turn on: named as before.
        #[allow(unreachable_patterns)]
        other => return debug_variant_name(other),
    };
    name.to_string()
}

/// A variant's name as its `Debug` form begins.
fn debug_variant_name(kind: &duroxide::EventKind) -> String {
    format!("{kind:?}")
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The variant name of a work item, stored as `orchestrator_queue.item_kind`.
pub(crate) fn work_item_kind(item: &WorkItem) -> &'static str {
    match item {
        WorkItem::StartOrchestration { .. } => "StartOrchestration",
        WorkItem::ActivityExecute { .. } => "ActivityExecute",
        WorkItem::ActivityCompleted { .. } => "ActivityCompleted",
        WorkItem::ActivityFailed { .. } => "ActivityFailed",
        WorkItem::TimerFired { .. } => "TimerFired",
        WorkItem::ExternalRaised { .. } => "ExternalRaised",
        WorkItem::SubOrchCompleted { .. } => "SubOrchCompleted",
        WorkItem::SubOrchFailed { .. } => "SubOrchFailed",
        WorkItem::CancelInstance { .. } => "CancelInstance",
        WorkItem::ContinueAsNew { .. } => "ContinueAsNew",
        WorkItem::QueueMessage { .. } => "QueueMessage",
    }
}

/// The instance whose orchestrator queue receives `item`.
///
/// # Errors
/// [`PostgresProviderError::InvalidInput`] for `ActivityExecute`, which belongs on
/// the worker queue.
pub(crate) fn orchestrator_instance(item: &WorkItem) -> Result<&str> {
    match item {
        WorkItem::StartOrchestration { instance, .. }
        | WorkItem::ActivityCompleted { instance, .. }
        | WorkItem::ActivityFailed { instance, .. }
        | WorkItem::TimerFired { instance, .. }
        | WorkItem::ExternalRaised { instance, .. }
        | WorkItem::CancelInstance { instance, .. }
        | WorkItem::ContinueAsNew { instance, .. }
        | WorkItem::QueueMessage { instance, .. } => Ok(instance),
        WorkItem::SubOrchCompleted {
            parent_instance, ..
        }
        | WorkItem::SubOrchFailed {
            parent_instance, ..
        } => Ok(parent_instance),
        WorkItem::ActivityExecute { .. } => Err(PostgresProviderError::invalid_input(
            "orchestrator item",
            "ActivityExecute belongs on the worker queue",
        )),
    }
}

/// An orchestrator-queue row ready to bind: target instance, kind, JSON and
/// the visibility delay (TimerFired items carry their own absolute time).
pub(crate) struct OrchestratorRow {
    /// Target instance.
    pub instance: String,
    /// Variant name.
    pub kind: &'static str,
    /// Serialized item.
    pub json: String,
    /// Absolute visibility time in ms (TimerFired), or `None` for "now + delay".
    pub fire_at_ms: Option<i64>,
}

impl OrchestratorRow {
    /// Builds the row for `item`, validating its text fields.
    pub(crate) fn new(item: &WorkItem) -> Result<Self> {
        let instance = check_id("instance_id", orchestrator_instance(item)?)?.to_string();
        check_start_names(item)?;
        let fire_at_ms = match item {
            // duroxide saturates a timer's due time (a `Duration::MAX`
            // timer is due at `u64::MAX`): saturated here too, as a delay
            // is, to a time that never comes and stays inside `bigint`.
            WorkItem::TimerFired { fire_at_ms, .. } => {
                Some(millis(Duration::from_millis(*fire_at_ms)))
            }
            _ => None,
        };
        Ok(Self {
            instance,
            kind: work_item_kind(item),
            json: encode_work_item(item)?,
            fire_at_ms,
        })
    }
}

/// Whether `event` records a failure (an orchestration's, a
/// sub-orchestration's or an activity's), held to the failure bound
/// ([`crate::store::Limits::check_failure`]).
pub(crate) fn is_failure_event(event: &Event) -> bool {
    use duroxide::EventKind as K;
    matches!(
        event.kind,
        K::OrchestrationFailed { .. } | K::SubOrchestrationFailed { .. } | K::ActivityFailed { .. }
    )
}

/// Whether an orchestrator message of variant `kind` (as
/// [`work_item_kind`] names it) carries a failure to its instance.
pub(crate) fn is_failure_message(kind: &str) -> bool {
    matches!(kind, "ActivityFailed" | "SubOrchFailed")
}

/// Refuses a start (or a continue-as-new) whose orchestration name,
/// version or parent instance the instance's row cannot store: every ack of
/// the instance binds them, its poison ack included, so one accepted here
/// would fail them all and the instance would never end.
fn check_start_names(item: &WorkItem) -> Result<()> {
    let (orchestration, version, parent) = match item {
        WorkItem::StartOrchestration {
            orchestration,
            version,
            parent_instance,
            ..
        }
        | WorkItem::ContinueAsNew {
            orchestration,
            version,
            parent_instance,
            ..
        } => (orchestration, version, parent_instance),
        _ => return Ok(()),
    };
    check_text("orchestration", orchestration)?;
    if let Some(version) = version {
        check_text("version", version)?;
    }
    if let Some(parent) = parent {
        check_id("parent_instance", parent)?;
    }
    Ok(())
}

/// A worker-queue row ready to bind.
pub(crate) struct WorkerRow {
    /// Serialized item.
    pub json: String,
    /// Activity identity, for cancellation.
    pub instance: String,
    /// Execution of the activity.
    pub execution_id: i64,
    /// ActivityScheduled event id.
    pub activity_id: i64,
    /// Session the activity is pinned to, if any.
    pub session_id: Option<String>,
    /// Routing tag, if any.
    pub tag: Option<String>,
}

impl WorkerRow {
    /// Builds the row for an `ActivityExecute` item.
    ///
    /// # Errors
    /// [`PostgresProviderError::InvalidInput`] for any other variant or bad text.
    pub(crate) fn new(item: &WorkItem) -> Result<Self> {
        let WorkItem::ActivityExecute {
            instance,
            execution_id,
            id,
            session_id,
            tag,
            ..
        } = item
        else {
            return Err(PostgresProviderError::invalid_input(
                "worker item",
                format!("{} cannot go on the worker queue", work_item_kind(item)),
            ));
        };
        if let Some(s) = session_id {
            check_id("session_id", s)?;
        }
        if let Some(t) = tag {
            check_text("tag", t)?;
        }
        Ok(Self {
            json: encode_work_item(item)?,
            instance: check_id("instance_id", instance)?.to_string(),
            execution_id: to_i64("execution_id", *execution_id)?,
            activity_id: to_i64("activity_id", *id)?,
            session_id: session_id.clone(),
            tag: tag.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_over_the_limit_are_refused_naming_the_field() {
        let edge = "a".repeat(MAX_ID_BYTES);
        assert!(check_id("instance_id", &edge).is_ok());
        let err = check_id("instance_id", &format!("{edge}a")).expect_err("too long");
        assert!(err.to_string().contains("instance_id"), "{err}");
        assert!(check_id("session_id", "a\0b").is_err());
    }

    #[test]
    fn a_lease_is_what_is_left_of_the_timeout_but_at_least_half() {
        let clock = AttemptClock(Instant::now() - Duration::from_millis(300));
        let left = clock.lease_ms(Duration::from_secs(1));
        assert!((650..=700).contains(&left), "{left}");
        assert_eq!(clock.lease_ms(Duration::from_millis(400)), 200);
    }

    #[test]
    fn durations_saturate_where_five_of_them_still_fit_beside_a_clock() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), MAX_MILLIS);
        assert_eq!(millis(Duration::from_millis(u64::MAX)), MAX_MILLIS);
        let now_ms: i64 = 1_800_000_000_000;
        assert!(
            MAX_MILLIS
                .checked_mul(5)
                .and_then(|d| d.checked_add(now_ms))
                .is_some()
        );
    }

    #[test]
    fn nul_is_rejected_with_field_name() {
        let err = check_text("instance", "a\0b").expect_err("NUL must be rejected");
        assert!(err.to_string().contains("instance"), "{err}");
        assert!(check_text("instance", "plain").is_ok());
    }

    #[test]
    fn event_type_is_the_variant_name_debug_begins_with_for_every_variant() {
        use duroxide::{ErrorDetails, EventKind as K};
        let s = || "x".to_string();
        let details = || ErrorDetails::Infrastructure {
            operation: s(),
            message: s(),
            retryable: false,
        };
        let kinds = vec![
            K::OrchestrationStarted {
                name: s(),
                version: s(),
                input: s(),
                parent_instance: None,
                parent_id: None,
                parent_execution_id: None,
                carry_forward_events: None,
                initial_custom_status: None,
            },
            K::OrchestrationCompleted { output: s() },
            K::OrchestrationFailed { details: details() },
            K::ActivityScheduled {
                name: s(),
                input: s(),
                session_id: None,
                tag: None,
            },
            K::ActivityCompleted { result: s() },
            K::ActivityFailed { details: details() },
            K::ActivityCancelRequested { reason: s() },
            K::TimerCreated { fire_at_ms: 1 },
            K::TimerFired { fire_at_ms: 1 },
            K::ExternalSubscribed { name: s() },
            K::ExternalEvent {
                name: s(),
                data: s(),
            },
            K::OrchestrationChained {
                name: s(),
                instance: s(),
                input: s(),
            },
            K::SubOrchestrationScheduled {
                name: s(),
                instance: s(),
                input: s(),
            },
            K::SubOrchestrationCompleted { result: s() },
            K::SubOrchestrationFailed { details: details() },
            K::SubOrchestrationCancelRequested { reason: s() },
            K::OrchestrationContinuedAsNew { input: s() },
            K::OrchestrationCancelRequested { reason: s() },
            K::ExternalSubscribedCancelled { reason: s() },
            K::QueueSubscribed { name: s() },
            K::QueueEventDelivered {
                name: s(),
                data: s(),
            },
            K::QueueSubscriptionCancelled { reason: s() },
            K::CustomStatusUpdated { status: None },
            K::KeyValueSet {
                key: s(),
                value: s(),
                last_updated_at_ms: 1,
            },
            K::KeyValueCleared { key: s() },
            K::KeyValuesCleared,
        ];
        assert_eq!(kinds.len(), 26);
        for kind in kinds {
            let expected = debug_variant_name(&kind);
            let event = Event::with_event_id(1, s(), 1, None, kind);
            assert_eq!(event_type(&event), expected);
        }
    }
}
