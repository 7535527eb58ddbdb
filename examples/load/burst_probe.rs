//! Where a burst's time goes: CPU of this process (the runtimes and the
//! client) against the server's (every PostgreSQL process, including the
//! backends that exited meanwhile, which their parent counts once reaped),
//! and the procedure calls the burst made, by name, from
//! `pg_stat_user_functions` (counted only when the server runs with
//! `track_functions = all`, as `pg-throwaway.sh --conf track_functions=all`
//! starts it).

use std::collections::BTreeMap;

use sqlx::PgPool;

use super::BoxError;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`).
const TICKS_PER_SECOND: f64 = 100.0;

/// Counters at one instant.
pub struct Probe {
    client_cpu_ms: Option<f64>,
    server_cpu_ms: Option<f64>,
    calls: BTreeMap<String, i64>,
}

/// What happened between two probes.
pub struct Used {
    /// CPU of this process, ms.
    pub client_cpu_ms: Option<f64>,
    /// CPU of the server's processes, ms.
    pub server_cpu_ms: Option<f64>,
    /// Procedure calls by name, across schemas.
    pub calls: BTreeMap<String, i64>,
}

/// (utime + stime, cutime + cstime, ppid) of a process, in ms.
fn cpu(pid: &str) -> Option<(f64, f64, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    let own = (n(11)? + n(12)?) * 1000.0 / TICKS_PER_SECOND;
    let children = (n(13)? + n(14)?) * 1000.0 / TICKS_PER_SECOND;
    Some((own, children, f.get(1)?.to_string()))
}

/// The postmaster's CPU with its reaped children's, plus every live child's.
fn server_cpu(backend_pid: i32) -> Option<f64> {
    let (_, _, postmaster) = cpu(&backend_pid.to_string())?;
    let (own, reaped, _) = cpu(&postmaster)?;
    let mut total = own + reaped;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str() else { continue };
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        match cpu(pid) {
            Some((own, _, ppid)) if ppid == postmaster => total += own,
            _ => {}
        }
    }
    Some(total)
}

impl Probe {
    /// Reads the counters now.
    pub async fn now(admin: &PgPool) -> Result<Probe, BoxError> {
        let pid: i32 = sqlx::query_scalar("SELECT pg_catalog.pg_backend_pid()")
            .fetch_one(admin)
            .await?;
        // Give backends a moment to flush their function statistics.
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        let rows: Vec<(String, i64)> = sqlx::query_as(
            // Each schema's procedures carry its suffix; counted by procedure.
            "SELECT pg_catalog.regexp_replace(funcname, '__[0-9a-f]{8}$', '') AS procedure, \
                    sum(calls)::int8 FROM pg_catalog.pg_stat_user_functions \
             WHERE schemaname LIKE 'burst%' GROUP BY 1",
        )
        .fetch_all(admin)
        .await?;
        Ok(Probe {
            client_cpu_ms: cpu("self").map(|(own, _, _)| own),
            server_cpu_ms: server_cpu(pid),
            calls: rows.into_iter().collect(),
        })
    }

    /// From `self` to `later`.
    pub fn until(&self, later: &Probe) -> Used {
        let diff = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        Used {
            client_cpu_ms: diff(self.client_cpu_ms, later.client_cpu_ms),
            server_cpu_ms: diff(self.server_cpu_ms, later.server_cpu_ms),
            calls: later
                .calls
                .iter()
                .map(|(k, v)| (k.clone(), v - self.calls.get(k).copied().unwrap_or(0)))
                .filter(|(_, v)| *v != 0)
                .collect(),
        }
    }
}

impl Used {
    /// One line for the progress output, calls per orchestration.
    pub fn describe(&self, orchestrations: usize) -> String {
        let ms = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.0} ms"));
        let per = orchestrations.max(1) as f64;
        let calls: Vec<String> = self
            .calls
            .iter()
            .map(|(k, v)| format!("{k} {:.2}", *v as f64 / per))
            .collect();
        format!(
            "client CPU {}, server CPU {}; calls per orchestration: {}",
            ms(self.client_cpu_ms),
            ms(self.server_cpu_ms),
            calls.join(", ")
        )
    }
}
