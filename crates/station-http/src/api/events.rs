//! `GET /api/v1/generations/{id}/events`: a generation's live events as
//! Server-Sent Events. Events published on this process's bus arrive at
//! once; the job row is also polled every 500 ms, so a generation run by
//! another Station process (which only changes the row) is followed too.
//!
//! Event types: `status` (`{status, status_text, progress, queue_position,
//! backend_ahead, eta_ms, error?}`),
//! `progress` (`{fraction, step?, of?, label?}`), `preview` (`{mime,
//! data_url}`), `result` (`{outputs: [{id, ref, url, thumbnail_url}]}`). The
//! stream ends after the terminal `status` (and `result` when it succeeded),
//! or when the server shuts down (the client reconnects to another).
//!
//! `GET /api/v1/casts/{id}/events` follows a whole cast the same way (the
//! cast's rows are re-read on its steps' bus events and every 500 ms):
//! `status` (`{status, step, steps_total, tool, progress, progress_text,
//! error?}`) when the status or the current step changes, `progress`
//! (`{fraction, progress_text, step, steps_total}`) when the cast's overall
//! fraction or its text moves, and a final `result` (`{outputs: [...]}`,
//! the last step's) when it succeeded; the stream ends with the cast.

use std::convert::Infallible;
use std::time::Duration;

use crate::extract::Path;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use base64::Engine;
use futures::Stream;
use serde_json::{Value, json};
use station_core::spells::CastView;
use station_core::{JobEvent, Station};
use station_core::{JobStatus, JobView};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::generations::OutputRef;
use super::{ApiResult, ErrorBody};
use crate::Caller;

/// How often the row is read for changes made by other processes.
pub const POLL: Duration = Duration::from_millis(500);

/// Routes of this module.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::new().routes(routes!(generation_events)).routes(routes!(cast_events))
}

/// Live events of one of your generations (Server-Sent Events: `status`,
/// `progress`, `preview`, `result`); the stream ends when the generation does.
#[utoipa::path(get, path = "/api/v1/generations/{id}/events", tag = "generations",
    params(("id" = String, Path, description = "Generation id")),
    responses((status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn generation_events(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    // Subscribe before the first read so nothing published in between is lost.
    let bus = station.bus.subscribe();
    // The ownership check's read is also the stream's first state, sent at once.
    let first = station.job_status_for(&a, &id).await?.view;
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(follow(station, id, bus, tx, first));
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn event(kind: &str, data: Value) -> Event {
    Event::default().event(kind).data(data.to_string())
}

/// Sends the job's events until it ends or the client goes away.
pub(crate) async fn follow(
    station: Station,
    id: String,
    mut bus: tokio::sync::broadcast::Receiver<JobEvent>,
    tx: mpsc::Sender<Event>,
    first: JobView,
) {
    // Status and position (in Station's queue, on the backend) last sent.
    type Shown = (JobStatus, (Option<i64>, Option<i64>));
    let mut last_status: Option<Shown> = None;
    let mut last_progress = 0.0f64;
    // Whether the job was seen before it ended (else only its end state is sent).
    let mut followed = false;
    // The first state is the one read when the stream was opened.
    let mut first = Some(first);
    let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + POLL, POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let view = match first.take() {
            Some(v) => v,
            None => {
                // The row is the truth: read it on every tick and after every status event.
                let mut read_row = false;
                tokio::select! {
                    _ = poll.tick() => read_row = true,
                    _ = tx.closed() => return,
                    // Shutting down: end the stream so the connection can close.
                    () = station.closing.cancelled() => return,
                    ev = bus.recv() => match ev {
                        Ok(ev) if ev.job_id() == id => match ev {
                            JobEvent::Progress { fraction, step, of, label, .. } => {
                                if fraction > last_progress {
                                    last_progress = fraction;
                                    let data = json!({"fraction": fraction, "step": step, "of": of, "label": label});
                                    if tx.send(event("progress", data)).await.is_err() { return; }
                                }
                            }
                            JobEvent::Preview { mime, data, .. } => {
                                let b64 = base64::engine::general_purpose::STANDARD.encode(data.as_slice());
                                let data = json!({"mime": mime, "data_url": format!("data:{mime};base64,{b64}")});
                                if tx.send(event("preview", data)).await.is_err() { return; }
                            }
                            JobEvent::Status { .. } | JobEvent::Result { .. } => read_row = true,
                        },
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => read_row = true,
                        Err(RecvError::Closed) => read_row = true,
                    },
                }
                if !read_row {
                    continue;
                }
                match station.job_view(&id).await {
                    Ok(Some(v)) => v,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(job = %id, error = %e, "event stream could not read the job; retrying");
                        continue;
                    }
                }
            }
        };
        let row = &view.row;
        let status = row.status();
        followed |= !status.is_terminal();
        // A status event when the status or the queue position changes.
        let position = (view.queue_position, view.backend_ahead());
        if last_status != Some((status, position)) {
            last_status = Some((status, position));
            let data = json!({
                "status": status,
                "status_text": view.status_text(),
                "backend_ahead": view.backend_ahead(),
                "progress": if status == JobStatus::Succeeded { 1.0 } else { row.progress },
                "queue_position": view.queue_position,
                "eta_ms": view.eta_ms,
                "error": row.error.as_ref().filter(|_| matches!(status, JobStatus::Failed | JobStatus::Cancelled)),
            });
            if tx.send(event("status", data)).await.is_err() {
                return;
            }
        }
        if row.progress > last_progress && !status.is_terminal() {
            last_progress = row.progress;
            if tx.send(event("progress", json!({"fraction": row.progress}))).await.is_err() {
                return;
            }
        }
        if status.is_terminal() {
            if status == JobStatus::Succeeded {
                // Followed live: progress ends at 100 % before the result.
                if followed && last_progress < 1.0 {
                    let _ = tx.send(event("progress", json!({"fraction": 1.0}))).await;
                }
                let outputs: Vec<OutputRef> = row.output_ids().iter().map(|o| OutputRef::new(o)).collect();
                let _ = tx.send(event("result", json!({"outputs": outputs}))).await;
            }
            return;
        }
    }
}

/// Live events of one of your casts (Server-Sent Events: `status` with the
/// current step and `progress_text` such as "step 2 of 3: Upscale 40 %",
/// `progress` with the whole cast's fraction, and a final `result` with the
/// last step's outputs); the stream ends when the cast does.
#[utoipa::path(get, path = "/api/v1/casts/{id}/events", tag = "spells",
    params(("id" = String, Path, description = "Cast id")),
    responses((status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn cast_events(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let bus = station.bus.subscribe();
    let first = station
        .cast_view(&a, &id)
        .await?
        .ok_or_else(|| super::ApiError::not_found("cast", &id, "GET /api/v1/casts lists your casts"))?;
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(follow_cast(station, id, bus, tx, first));
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Sends a cast's events until it ends or the client goes away.
async fn follow_cast(
    station: Station,
    id: String,
    mut bus: tokio::sync::broadcast::Receiver<JobEvent>,
    tx: mpsc::Sender<Event>,
    first: CastView,
) {
    let mut last_status: Option<(String, usize)> = None;
    let mut last_progress: Option<(f64, String)> = None;
    // The steps' jobs: their bus events are the cast's.
    let jobs: Vec<String> = first.steps.iter().map(|s| s.job_id.clone()).collect();
    let mut first = Some(first);
    let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + POLL, POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let view = match first.take() {
            Some(v) => v,
            None => {
                tokio::select! {
                    _ = poll.tick() => {}
                    _ = tx.closed() => return,
                    () = station.closing.cancelled() => return,
                    ev = bus.recv() => {
                        // Only this cast's steps' events (any, when lagging) make a read.
                        if let Ok(ev) = ev && !jobs.iter().any(|j| j == ev.job_id()) {
                            continue;
                        }
                    }
                }
                match station.cast_view_of(&id).await {
                    Ok(Some(v)) => v,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(cast = %id, error = %e, "event stream could not read the cast; retrying");
                        continue;
                    }
                }
            }
        };
        let terminal = view.status != "running";
        let step_tool = view.steps.get(view.step.saturating_sub(1)).map(|s| s.tool_name.clone()).unwrap_or_default();
        if last_status.as_ref() != Some(&(view.status.clone(), view.step)) {
            last_status = Some((view.status.clone(), view.step));
            let data = json!({
                "status": view.status,
                "step": view.step,
                "steps_total": view.steps_total,
                "tool": step_tool,
                "progress": view.progress,
                "progress_text": view.progress_text,
                "error": view.error,
            });
            if tx.send(event("status", data)).await.is_err() {
                return;
            }
        }
        let moved = match &last_progress {
            None => true,
            Some((f, text)) => view.progress > *f || *text != view.progress_text,
        };
        if moved && (!terminal || view.status == "succeeded") {
            last_progress = Some((view.progress, view.progress_text.clone()));
            let data = json!({
                "fraction": view.progress,
                "progress_text": view.progress_text,
                "step": view.step,
                "steps_total": view.steps_total,
            });
            if tx.send(event("progress", data)).await.is_err() {
                return;
            }
        }
        if terminal {
            if view.status == "succeeded" {
                let outputs: Vec<OutputRef> = view.outputs.iter().map(|o| OutputRef::new(o)).collect();
                let _ = tx.send(event("result", json!({"outputs": outputs}))).await;
            }
            return;
        }
    }
}
