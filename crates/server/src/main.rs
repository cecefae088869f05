//! `carekeep-server`: set up and run the Carekeep reference backend.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use carekeep_server::{DataDir, ServerError};
use clap::{Parser, Subcommand};

/// The Carekeep reference server: HTTPS only.
#[derive(Parser)]
#[command(name = "carekeep-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory: master key, signing key, TLS key and certificate, and an
    /// offline backup key. Prints the pin set clients must hold.
    Init {
        /// The directory to create.
        #[arg(long)]
        data: PathBuf,
        /// The name clients reach the server by (also valid: localhost, 127.0.0.1).
        #[arg(long, default_value = "localhost")]
        hostname: String,
    },
    /// Print the SPKI SHA-256 pins (base64, RFC 7469): live key first, backup key second.
    Pins {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
    },
    /// Serve the API over HTTPS (there is no plaintext listener).
    Serve {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// Address and port to listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("carekeep-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), ServerError> {
    match command {
        Command::Init { data, hostname } => {
            let (_, pins) = DataDir::init(&data, &hostname)?;
            eprintln!("Initialised {}. Clients pin these keys (live, then backup):", data.display());
            println!("{}\n{}", pins.live, pins.backup);
            eprintln!("Move {} offline: it is the backup key.", data.join("tls").join("backup-key.pem").display());
            Ok(())
        }
        Command::Pins { data } => {
            let pins = DataDir::open(&data)?.pins()?;
            println!("{}\n{}", pins.live, pins.backup);
            Ok(())
        }
        Command::Serve { data, listen } => {
            let dir = DataDir::open(&data)?;
            let runtime = tokio::runtime::Runtime::new().map_err(|e| ServerError::Tls(e.to_string()))?;
            runtime.block_on(carekeep_server::http::serve(
                &dir,
                listen,
                |addr| tracing::info!(%addr, "listening (HTTPS only)"),
                async {
                    let _ = tokio::signal::ctrl_c().await;
                },
            ))
        }
    }
}
