//! `memory`: a provider that keeps everything in the load tool's process,
//! behind one mutex, with no serialization, no statements and no network.
//!
//! It is not a provider for use: it keeps only what duroxide's
//! parallel-orchestrations scenario needs (starts, activities and their
//! completions; no timers, sessions, tags, KV, custom status, delays or
//! ContinueAsNew), never expires a lock, and loses everything when the process
//! ends. It also settles perfectly: an instance's completions wait until its
//! last activity is done, so every fan-out takes two turns (start, then all
//! completions), the fewest the scenario allows. It exists to measure the
//! ceiling: what the runtime, the client's status polling and the scenario's
//! activity reach on this machine when storage costs next to nothing, so the
//! load tool's figures for real providers can be read against it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use duroxide::Event;
use duroxide::providers::{
    DispatcherCapabilityFilter, ExecutionMetadata, OrchestrationItem, Provider, ProviderError,
    ScheduledActivityIdentifier, SessionFetchConfig, TagFilter, WorkItem,
};
use tokio::sync::Notify;

/// One instance's current execution.
#[derive(Default)]
struct Instance {
    name: Option<String>,
    version: Option<String>,
    execution_id: u64,
    history: Vec<Event>,
}

/// Everything the provider keeps.
#[derive(Default)]
struct State {
    instances: HashMap<String, Instance>,
    /// (instance, message), oldest first.
    orchestrator_queue: VecDeque<(String, WorkItem)>,
    /// Instances whose turn is in progress.
    leased: HashSet<String>,
    /// Token → the leased instance and its messages.
    turns: HashMap<String, (String, Vec<WorkItem>)>,
    worker_queue: VecDeque<WorkItem>,
    /// Token → the item being run.
    activities: HashMap<String, WorkItem>,
    /// Instance → its activities queued or running.
    in_flight: HashMap<String, usize>,
}

/// The in-memory provider (see the module's documentation).
#[derive(Default)]
pub struct MemoryProvider {
    state: Mutex<State>,
    tokens: AtomicU64,
    orchestrator_ready: Notify,
    worker_ready: Notify,
}

fn lock_lost(operation: &str) -> ProviderError {
    ProviderError::permanent(operation, "lock lost")
}

fn unsupported(operation: &str) -> ProviderError {
    ProviderError::permanent(operation, "not kept by the load tool's memory provider")
}

/// The instance whose orchestrator queue receives `item`.
fn target(item: &WorkItem) -> Result<String, ProviderError> {
    match item {
        WorkItem::StartOrchestration { instance, .. }
        | WorkItem::ActivityCompleted { instance, .. }
        | WorkItem::ActivityFailed { instance, .. }
        | WorkItem::CancelInstance { instance, .. } => Ok(instance.clone()),
        _ => Err(unsupported("enqueue")),
    }
}

/// Claims with `claim` until it finds something or `poll_timeout` has
/// passed, waiting on `ready` in between.
async fn long_poll<T>(
    ready: &Notify,
    poll_timeout: Duration,
    mut claim: impl FnMut() -> Result<Option<T>, ProviderError>,
) -> Result<Option<T>, ProviderError> {
    let deadline = tokio::time::Instant::now() + poll_timeout;
    loop {
        if let Some(found) = claim()? {
            return Ok(Some(found));
        }
        // A permit left by an enqueue that found no waiter wakes this at once.
        if tokio::time::timeout_at(deadline, ready.notified())
            .await
            .is_err()
        {
            return claim();
        }
    }
}

impl MemoryProvider {
    fn lock(&self, operation: &str) -> Result<std::sync::MutexGuard<'_, State>, ProviderError> {
        self.state
            .lock()
            .map_err(|_| ProviderError::permanent(operation, "state poisoned"))
    }

    fn token(&self) -> String {
        format!("t{}", self.tokens.fetch_add(1, Ordering::Relaxed))
    }

    /// Claims the first instance with a message and no turn in progress
    /// whose activities are all done (or whose message starts it).
    fn claim_turn(&self) -> Result<Option<(OrchestrationItem, String, u32)>, ProviderError> {
        let mut state = self.lock("fetch_orchestration_item")?;
        let State {
            orchestrator_queue,
            leased,
            in_flight,
            ..
        } = &mut *state;
        let Some(instance) = orchestrator_queue
            .iter()
            .find(|(instance, message)| {
                !leased.contains(instance)
                    && (matches!(message, WorkItem::StartOrchestration { .. })
                        || in_flight.get(instance).is_none_or(|n| *n == 0))
            })
            .map(|(instance, _)| instance.clone())
        else {
            return Ok(None);
        };
        let mut messages = Vec::new();
        orchestrator_queue.retain(|(i, message)| {
            if *i == instance {
                messages.push(message.clone());
                false
            } else {
                true
            }
        });
        leased.insert(instance.clone());
        let (name, version, execution_id, history) = match state.instances.get(&instance) {
            Some(known) => (
                known.name.clone().unwrap_or_default(),
                known.version.clone(),
                known.execution_id,
                known.history.clone(),
            ),
            None => messages
                .iter()
                .find_map(|m| match m {
                    WorkItem::StartOrchestration {
                        orchestration,
                        version,
                        execution_id,
                        ..
                    } => Some((
                        orchestration.clone(),
                        version.clone(),
                        *execution_id,
                        Vec::new(),
                    )),
                    _ => None,
                })
                .ok_or_else(|| unsupported("fetch_orchestration_item (no start)"))?,
        };
        let token = self.token();
        let item = OrchestrationItem {
            instance: instance.clone(),
            orchestration_name: name,
            execution_id,
            version: version.unwrap_or_else(|| "unknown".to_string()),
            history,
            messages: messages.clone(),
            history_error: None,
            kv_snapshot: HashMap::new(),
        };
        state.turns.insert(token.clone(), (instance, messages));
        Ok(Some((item, token, 1)))
    }

    fn claim_activity(&self) -> Result<Option<(WorkItem, String, u32)>, ProviderError> {
        let mut state = self.lock("fetch_work_item")?;
        let Some(item) = state.worker_queue.pop_front() else {
            return Ok(None);
        };
        let token = self.token();
        state.activities.insert(token.clone(), item.clone());
        Ok(Some((item, token, 1)))
    }
}

#[async_trait::async_trait]
impl Provider for MemoryProvider {
    fn name(&self) -> &str {
        "memory"
    }

    fn version(&self) -> &str {
        "0"
    }

    async fn fetch_orchestration_item(
        &self,
        _lock_timeout: Duration,
        poll_timeout: Duration,
        _filter: Option<&DispatcherCapabilityFilter>,
    ) -> Result<Option<(OrchestrationItem, String, u32)>, ProviderError> {
        long_poll(&self.orchestrator_ready, poll_timeout, || self.claim_turn()).await
    }

    async fn ack_orchestration_item(
        &self,
        lock_token: &str,
        execution_id: u64,
        history_delta: Vec<Event>,
        worker_items: Vec<WorkItem>,
        orchestrator_items: Vec<WorkItem>,
        metadata: ExecutionMetadata,
        _cancelled_activities: Vec<ScheduledActivityIdentifier>,
    ) -> Result<(), ProviderError> {
        let mut state = self.lock("ack_orchestration_item")?;
        let (instance, _) = state
            .turns
            .remove(lock_token)
            .ok_or_else(|| lock_lost("ack_orchestration_item"))?;
        let targets = orchestrator_items
            .iter()
            .map(target)
            .collect::<Result<Vec<_>, _>>()?;
        let entry = state.instances.entry(instance.clone()).or_default();
        if entry.execution_id != execution_id {
            entry.execution_id = execution_id;
            entry.history.clear();
        }
        entry.history.extend(history_delta);
        if metadata.orchestration_name.is_some() {
            entry.name = metadata.orchestration_name;
        }
        if metadata.orchestration_version.is_some() {
            entry.version = metadata.orchestration_version;
        }
        let activities = worker_items.len();
        for item in &worker_items {
            if let WorkItem::ActivityExecute { instance, .. } = item {
                *state.in_flight.entry(instance.clone()).or_default() += 1;
            }
        }
        state.worker_queue.extend(worker_items);
        state
            .orchestrator_queue
            .extend(targets.into_iter().zip(orchestrator_items));
        state.leased.remove(&instance);
        let waiting = state.orchestrator_queue.iter().any(|(i, _)| *i == instance);
        drop(state);
        for _ in 0..activities {
            self.worker_ready.notify_one();
        }
        if waiting {
            self.orchestrator_ready.notify_one();
        }
        Ok(())
    }

    async fn abandon_orchestration_item(
        &self,
        lock_token: &str,
        _delay: Option<Duration>,
        _ignore_attempt: bool,
    ) -> Result<(), ProviderError> {
        let mut state = self.lock("abandon_orchestration_item")?;
        let (instance, messages) = state
            .turns
            .remove(lock_token)
            .ok_or_else(|| lock_lost("abandon_orchestration_item"))?;
        for message in messages.into_iter().rev() {
            state
                .orchestrator_queue
                .push_front((instance.clone(), message));
        }
        state.leased.remove(&instance);
        drop(state);
        self.orchestrator_ready.notify_one();
        Ok(())
    }

    async fn read(&self, instance: &str) -> Result<Vec<Event>, ProviderError> {
        let state = self.lock("read")?;
        Ok(state
            .instances
            .get(instance)
            .map(|i| i.history.clone())
            .unwrap_or_default())
    }

    async fn read_with_execution(
        &self,
        instance: &str,
        execution_id: u64,
    ) -> Result<Vec<Event>, ProviderError> {
        let state = self.lock("read_with_execution")?;
        Ok(state
            .instances
            .get(instance)
            .filter(|i| i.execution_id == execution_id)
            .map(|i| i.history.clone())
            .unwrap_or_default())
    }

    async fn append_with_execution(
        &self,
        instance: &str,
        execution_id: u64,
        new_events: Vec<Event>,
    ) -> Result<(), ProviderError> {
        let mut state = self.lock("append_with_execution")?;
        let entry = state.instances.entry(instance.to_string()).or_default();
        entry.execution_id = execution_id;
        entry.history.extend(new_events);
        Ok(())
    }

    async fn enqueue_for_worker(&self, item: WorkItem) -> Result<(), ProviderError> {
        self.lock("enqueue_for_worker")?
            .worker_queue
            .push_back(item);
        self.worker_ready.notify_one();
        Ok(())
    }

    async fn fetch_work_item(
        &self,
        _lock_timeout: Duration,
        poll_timeout: Duration,
        _session: Option<&SessionFetchConfig>,
        _tag_filter: &TagFilter,
    ) -> Result<Option<(WorkItem, String, u32)>, ProviderError> {
        long_poll(&self.worker_ready, poll_timeout, || self.claim_activity()).await
    }

    async fn ack_work_item(
        &self,
        token: &str,
        completion: Option<WorkItem>,
    ) -> Result<(), ProviderError> {
        let mut state = self.lock("ack_work_item")?;
        let item = state
            .activities
            .remove(token)
            .ok_or_else(|| lock_lost("ack_work_item"))?;
        if let WorkItem::ActivityExecute { instance, .. } = &item
            && let Some(n) = state.in_flight.get_mut(instance)
        {
            *n = n.saturating_sub(1);
        }
        if let Some(completion) = completion {
            let instance = target(&completion)?;
            state.orchestrator_queue.push_back((instance, completion));
            drop(state);
            self.orchestrator_ready.notify_one();
        }
        Ok(())
    }

    async fn renew_work_item_lock(
        &self,
        token: &str,
        _extend_for: Duration,
    ) -> Result<(), ProviderError> {
        let state = self.lock("renew_work_item_lock")?;
        state
            .activities
            .contains_key(token)
            .then_some(())
            .ok_or_else(|| lock_lost("renew_work_item_lock"))
    }

    async fn renew_session_lock(
        &self,
        _owner_ids: &[&str],
        _extend_for: Duration,
        _idle_timeout: Duration,
    ) -> Result<usize, ProviderError> {
        Ok(0)
    }

    async fn cleanup_orphaned_sessions(
        &self,
        _idle_timeout: Duration,
    ) -> Result<usize, ProviderError> {
        Ok(0)
    }

    async fn abandon_work_item(
        &self,
        token: &str,
        _delay: Option<Duration>,
        _ignore_attempt: bool,
    ) -> Result<(), ProviderError> {
        let mut state = self.lock("abandon_work_item")?;
        let item = state
            .activities
            .remove(token)
            .ok_or_else(|| lock_lost("abandon_work_item"))?;
        state.worker_queue.push_front(item);
        drop(state);
        self.worker_ready.notify_one();
        Ok(())
    }

    async fn renew_orchestration_item_lock(
        &self,
        token: &str,
        _extend_for: Duration,
    ) -> Result<(), ProviderError> {
        let state = self.lock("renew_orchestration_item_lock")?;
        state
            .turns
            .contains_key(token)
            .then_some(())
            .ok_or_else(|| lock_lost("renew_orchestration_item_lock"))
    }

    async fn enqueue_for_orchestrator(
        &self,
        item: WorkItem,
        delay: Option<Duration>,
    ) -> Result<(), ProviderError> {
        if delay.is_some_and(|d| !d.is_zero()) {
            return Err(unsupported("enqueue_for_orchestrator (delay)"));
        }
        let instance = target(&item)?;
        self.lock("enqueue_for_orchestrator")?
            .orchestrator_queue
            .push_back((instance, item));
        self.orchestrator_ready.notify_one();
        Ok(())
    }

    async fn get_custom_status(
        &self,
        _instance: &str,
        _last_seen_version: u64,
    ) -> Result<Option<(Option<String>, u64)>, ProviderError> {
        Ok(None)
    }

    async fn get_kv_value(
        &self,
        _instance: &str,
        _key: &str,
    ) -> Result<Option<String>, ProviderError> {
        Ok(None)
    }

    async fn get_kv_all_values(
        &self,
        _instance: &str,
    ) -> Result<HashMap<String, String>, ProviderError> {
        Ok(HashMap::new())
    }

    async fn get_instance_stats(
        &self,
        _instance: &str,
    ) -> Result<Option<duroxide::SystemStats>, ProviderError> {
        Ok(None)
    }
}
