//! `station doctor`: checks configuration, database, migrations, disk, tools,
//! every ComfyUI backend and the chat bots, and prints what to fix.

use station_comfyui::{ComfyClient, ComfyExecutor};
use station_core::Station;
use station_core::doctor::{Check, Verdict};

use crate::exit;

/// Runs every check, prints them, and returns 0 when nothing failed
/// (warnings allowed), 1 otherwise.
pub async fn run(station: &Station, tool_problems: &[String]) -> u8 {
    let mut checks = station.doctor(tool_problems).await;
    checks.extend(backends(station).await);
    match station_telegram::TelegramConfig::from_config(&station.config) {
        Ok(t) => checks.extend(station_telegram::doctor::doctor(&t).await),
        Err(e) => checks.push(Check::fail("Telegram bot", e.to_string(), "correct the [telegram] section")),
    }
    match station_discord::DiscordConfig::from_config(&station.config) {
        Ok(d) => checks.extend(station_discord::doctor::doctor(&d).await),
        Err(e) => checks.push(Check::fail("Discord bot", e.to_string(), "correct the [discord] section")),
    }
    print(&checks);
    if checks.iter().any(|c| c.verdict == Verdict::Fail) { exit::FAILED } else { exit::OK }
}

fn print(checks: &[Check]) {
    for c in checks {
        let mark = match c.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        println!("{mark}  {}: {}", c.subject, c.detail);
        if let Some(fix) = &c.fix {
            println!("      → {fix}");
        }
    }
    let fails = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    let warns = checks.iter().filter(|c| c.verdict == Verdict::Warn).count();
    println!();
    match (fails, warns) {
        (0, 0) => println!("All {} checks passed.", checks.len()),
        (0, w) => println!("No problems; {w} warning{} to look at.", if w == 1 { "" } else { "s" }),
        (f, _) => println!("{f} problem{} to fix (marked FAIL above).", if f == 1 { "" } else { "s" }),
    }
}

/// Each backend: reachable, its ComfyUI version and devices, how many node
/// types it offers, and which tools it can run.
async fn backends(station: &Station) -> Vec<Check> {
    let specs = super::wire::backend_specs(station).await;
    let comfy_tools = station.tools.list().into_iter().filter(|t| t.comfyui.is_some()).count();
    if specs.is_empty() {
        if comfy_tools == 0 {
            return vec![];
        }
        return vec![Check::warn(
            "ComfyUI",
            format!("no backend configured; {comfy_tools} ComfyUI tools wait in the queue until one is added"),
            "add one: `station backends add NAME URL`, or STATION_COMFYUI_BACKENDS=http://host:8188",
        )];
    }
    let pool = match ComfyExecutor::with_health_timeouts(specs, "none", super::wire::health_timeouts(station)) {
        Ok(p) => p,
        Err(e) => return vec![Check::fail("ComfyUI", e.to_string(), "correct the backend's URL")],
    };
    pool.check_all().await;
    let tools = station.tools.list();
    let caps = pool.capabilities(&tools);
    let mut out = vec![];
    for (status, (_, per_tool)) in pool.statuses().iter().zip(caps) {
        let subject = format!("backend {}", status.spec.name);
        let url = station_core::mask_url(&status.spec.url);
        if !status.healthy {
            out.push(Check::fail(
                subject,
                format!("{url} does not answer: {}", status.last_error.clone().unwrap_or_default()),
                "start ComfyUI there (with --listen if on another machine), or remove it: `station backends remove NAME`",
            ));
            continue;
        }
        let about = match ComfyClient::new(&status.spec.url) {
            Ok(c) => match c.system_stats().await {
                Ok(s) => {
                    let version = s.system.comfyui_version.unwrap_or_else(|| "an unknown version".into());
                    let devices: Vec<String> = s.devices.iter().map(|d| d.name.clone()).collect();
                    format!(
                        "ComfyUI {version} on {}",
                        if devices.is_empty() { "no device".into() } else { devices.join(", ") }
                    )
                }
                Err(e) => format!("system stats unavailable ({e})"),
            },
            Err(e) => format!("{e}"),
        };
        let runnable = per_tool.iter().filter(|(_, why)| why.is_none()).count();
        let detail = format!(
            "{url} answers: {about}, {} node types, runs {runnable} of {} ComfyUI tools",
            status.node_count,
            per_tool.len()
        );
        if runnable == 0 && !per_tool.is_empty() {
            let why: Vec<String> =
                per_tool.iter().filter_map(|(t, w)| w.as_ref().map(|w| format!("{t}: {w}"))).take(3).collect();
            out.push(Check::warn(
                subject,
                format!("{detail} ({})", why.join("; ")),
                "install the missing nodes or models there",
            ));
        } else {
            out.push(Check::ok(subject, detail));
        }
    }
    pool.shutdown();
    out
}
