//! What Station counts, for operators' graphs and alerts.
//!
//! The core and the front ends record through the `metrics` facade (a no-op
//! until a recorder is installed); `station-http` installs the Prometheus
//! recorder and serves `GET /metrics`. Names live here, in one place, with
//! their help text ([`describe`]) so the exporter and `docs/OPERATIONS.md`
//! agree.
//!
//! **Labels are bounded**: tool names (from the operator's registry),
//! services, backends, platforms, outcomes and route templates — never an
//! account, a job id or a prompt.

use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use crate::Station;

/// Jobs accepted into the queue, by `tool` and `service`.
pub const JOBS_SUBMITTED: &str = "station_jobs_submitted_total";
/// Jobs that reached an end, by `tool`, `service` and `outcome`
/// (`succeeded`, `failed`, `cancelled`).
pub const JOBS_FINISHED: &str = "station_jobs_finished_total";
/// Seconds from a worker's claim (or the backend's start, when known at the
/// claim) to the job's end, by `tool` and `backend`.
pub const JOB_RUN_SECONDS: &str = "station_job_run_seconds";
/// Seconds from submission until a worker claimed the job (Station's own
/// queue), by `tool` and `backend`.
pub const JOB_WAIT_SECONDS: &str = "station_job_wait_seconds";
/// Jobs waiting for a worker, by `service` (read at scrape time).
pub const QUEUE_DEPTH: &str = "station_queue_depth";
/// Age in seconds of the oldest job waiting for a worker, by `service` (0 when none wait).
pub const QUEUE_OLDEST_AGE: &str = "station_queue_oldest_age_seconds";
/// 1 when a backend answers its health check, else 0; by `service` and `backend`.
pub const BACKEND_UP: &str = "station_backend_up";
/// Jobs dispatched to or running on a backend, by `service` and `backend`.
pub const BACKEND_IN_FLIGHT: &str = "station_backend_in_flight";
/// How many jobs a service runs at once, by `service`.
pub const SERVICE_CAPACITY: &str = "station_service_capacity";
/// Points moved by the ledger, by `kind` (`held`, `captured`, `released`, `granted`).
pub const POINTS: &str = "station_points_total";
/// HTTP requests answered, by `method`, `route` (a template) and `status`.
pub const HTTP_REQUESTS: &str = "station_http_requests_total";
/// Seconds to answer an HTTP request (until the response head), by `method` and `route`.
pub const HTTP_SECONDS: &str = "station_http_request_duration_seconds";
/// Chat updates handled, by `platform` and `outcome` (`handled`, `duplicate`, `error`).
pub const CHAT_UPDATES: &str = "station_chat_updates_total";
/// Messages the delivery service tried to send, by `platform` and `outcome`
/// (`sent`, `retry`, `rate_limited`, `failed`).
pub const DELIVERIES: &str = "station_deliveries_total";
/// Database connections, by `state` (`idle`, `busy`).
pub const DB_CONNECTIONS: &str = "station_db_connections";

/// Registers the help text and unit of every metric with the installed
/// recorder (call once, after installing it).
pub fn describe() {
    describe_counter!(JOBS_SUBMITTED, "Jobs accepted into the queue");
    describe_counter!(JOBS_FINISHED, "Jobs that reached an end, by outcome");
    describe_histogram!(JOB_RUN_SECONDS, Unit::Seconds, "Time from a worker claiming a job to its end");
    describe_histogram!(JOB_WAIT_SECONDS, Unit::Seconds, "Time a job waited in Station's queue");
    describe_gauge!(QUEUE_DEPTH, "Jobs waiting for a worker");
    describe_gauge!(QUEUE_OLDEST_AGE, Unit::Seconds, "Age of the oldest job waiting for a worker");
    describe_gauge!(BACKEND_UP, "1 when the backend answers its health check");
    describe_gauge!(BACKEND_IN_FLIGHT, "Jobs dispatched to or running on the backend");
    describe_gauge!(SERVICE_CAPACITY, "Jobs the service runs at once");
    describe_counter!(POINTS, "Points moved by the ledger, by kind");
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered");
    describe_histogram!(HTTP_SECONDS, Unit::Seconds, "Time to answer an HTTP request");
    describe_counter!(CHAT_UPDATES, "Chat updates handled, by platform and outcome");
    describe_counter!(DELIVERIES, "Chat messages sent or retried, by platform and outcome");
    describe_gauge!(DB_CONNECTIONS, "Database connections, by state");
}

/// The histogram buckets (seconds) for job and HTTP timings: from a
/// millisecond (an HTTP answer) to half an hour (a long training step).
pub const SECONDS_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0];

pub(crate) fn job_submitted(tool: &str, service: &str) {
    counter!(JOBS_SUBMITTED, "tool" => tool.to_owned(), "service" => service.to_owned()).increment(1);
}

/// A job's recorded end: its outcome, and how long it waited and ran
/// (timestamps in Unix ms, as the job row holds them).
pub(crate) fn job_finished(job: &station_store::JobRow, outcome: &'static str, finished_at: i64) {
    let tool = job.tool_id.clone();
    counter!(JOBS_FINISHED, "tool" => tool.clone(), "service" => job.service.clone(), "outcome" => outcome)
        .increment(1);
    let backend = job.backend.clone().unwrap_or_default();
    if let Some(started) = job.dispatched_at.or(job.started_at) {
        let wait = (started - job.created_at).max(0) as f64 / 1000.0;
        let run = (finished_at - started).max(0) as f64 / 1000.0;
        histogram!(JOB_WAIT_SECONDS, "tool" => tool.clone(), "backend" => backend.clone()).record(wait);
        histogram!(JOB_RUN_SECONDS, "tool" => tool, "backend" => backend).record(run);
    }
}

pub(crate) fn points(kind: &'static str, amount: i64) {
    if amount > 0 {
        counter!(POINTS, "kind" => kind).increment(amount as u64);
    }
}

/// One chat update handled by a front end (`outcome`: `handled`,
/// `duplicate` or `error`).
pub fn chat_update(platform: &str, outcome: &'static str) {
    counter!(CHAT_UPDATES, "platform" => platform.to_owned(), "outcome" => outcome).increment(1);
}

/// One send attempt of the delivery service (`outcome`: `sent`, `retry`,
/// `rate_limited` or `failed`).
pub fn delivery(platform: &str, outcome: &'static str) {
    counter!(DELIVERIES, "platform" => platform.to_owned(), "outcome" => outcome).increment(1);
}

/// One HTTP request answered.
pub fn http_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    let (method, route) = (method.to_owned(), route.to_owned());
    counter!(HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    histogram!(HTTP_SECONDS, "method" => method, "route" => route).record(elapsed.as_secs_f64());
}

impl Station {
    /// Sets the gauges that are read rather than counted — queue depth and
    /// age per service, backends' health and load, the database pool — just
    /// before an exporter renders them. Queries the database twice.
    pub async fn record_gauges(&self) -> Result<(), station_store::StoreError> {
        let now = station_store::now_ms();
        let queued = self.store.queued_by_service().await?;
        let executors = self.executors.read().expect("executors lock").clone();
        let mut services: Vec<String> = executors.iter().map(|e| e.service().to_string()).collect();
        // A service with nothing queued still shows 0, not a stale value.
        for q in &queued {
            if !services.contains(&q.service) {
                services.push(q.service.clone());
            }
        }
        for service in &services {
            let q = queued.iter().find(|q| &q.service == service);
            let depth = q.map(|q| q.queued).unwrap_or(0);
            let age = q.and_then(|q| q.oldest_created_at).map(|t| (now - t).max(0) as f64 / 1000.0).unwrap_or(0.0);
            gauge!(QUEUE_DEPTH, "service" => service.clone()).set(depth as f64);
            gauge!(QUEUE_OLDEST_AGE, "service" => service.clone()).set(age);
        }
        let load = self.store.backend_load().await?;
        for ex in executors {
            let service = ex.service().to_string();
            gauge!(SERVICE_CAPACITY, "service" => service.clone()).set(ex.capacity() as f64);
            for (backend, healthy, _) in ex.health().await {
                let in_flight = load.iter().find(|l| l.service == service && l.backend == backend).map(|l| l.active);
                let labels = [("service", service.clone()), ("backend", backend)];
                gauge!(BACKEND_UP, &labels).set(if healthy { 1.0 } else { 0.0 });
                gauge!(BACKEND_IN_FLIGHT, &labels).set(in_flight.unwrap_or(0) as f64);
            }
        }
        let (size, idle) = self.store.pool_connections();
        gauge!(DB_CONNECTIONS, "state" => "idle").set(idle as f64);
        gauge!(DB_CONNECTIONS, "state" => "busy").set(size.saturating_sub(idle as u32) as f64);
        Ok(())
    }
}
