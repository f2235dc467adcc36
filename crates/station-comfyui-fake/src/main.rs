//! `station-fake-comfyui --port N`: runs the fake ComfyUI until interrupted.

use station_comfyui_fake::{FakeComfy, FakeOptions};

#[tokio::main]
async fn main() {
    let mut options = FakeOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let value = args.next().unwrap_or_default();
                options.port = match value.parse() {
                    Ok(p) => p,
                    Err(_) => {
                        eprintln!("--port: expected a number 0-65535, got {value:?}");
                        std::process::exit(2);
                    }
                };
            }
            "--help" | "-h" => {
                println!("usage: station-fake-comfyui [--port N]");
                return;
            }
            other => {
                eprintln!("unknown argument {other:?}; usage: station-fake-comfyui [--port N]");
                std::process::exit(2);
            }
        }
    }
    let fake = match FakeComfy::try_start(options).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    // Printed on one line so a parent process can read the address.
    println!("{}", fake.url());
    let _ = tokio::signal::ctrl_c().await;
    fake.shutdown();
}
