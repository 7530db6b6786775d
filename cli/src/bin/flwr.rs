//! `flwr`: the Flower command line, for Floret.

use clap::{Parser, Subcommand};
use floret_cli::{
    build_cmd, exit_code, keygen_cmd, log_cmd, login_cmd, ls_cmd, new_cmd, report_outcome, run_cmd,
    session_cmd, stop_cmd, supernode_cmd, telemetry,
};
use std::process::ExitCode;

/// glibc's per-thread arenas keep freed model-sized buffers resident (S2 grew to 800 MB);
/// mimalloc returns them, keeping peak memory near what is actually live.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "flwr",
    version,
    about = "Run federated learning apps with Floret"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    telemetry: telemetry::TelemetryArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Make a new app (a Rust crate) from a template, offline.
    New(new_cmd::NewArgs),
    /// Build an app crate and pack it as a FAB (app bundle); a Flower app in Python is
    /// packed as Flower's FAB.
    Build(build_cmd::BuildArgs),
    /// Run an app on a federation: a local simulation, or a SuperLink (a federation with
    /// an address).
    Run(run_cmd::RunArgs),
    /// List the runs of a SuperLink.
    Ls(ls_cmd::LsArgs),
    /// Show or follow the log of a run on a SuperLink.
    Log(log_cmd::LogArgs),
    /// Stop a run on a SuperLink.
    Stop(stop_cmd::StopArgs),
    /// Log in to a SuperLink that authenticates users (`enable-user-auth = true`).
    Login(login_cmd::LoginArgs),
    /// Log out of a SuperLink: the session ends there and the stored login is forgotten.
    Logout(login_cmd::LogoutArgs),
    /// List or revoke the logins of a SuperLink that authenticates users (admins only).
    Session(session_cmd::SessionArgs),
    /// Print the argon2 hash of a password read from stdin, for a SuperLink's accounts
    /// file (`flower-superlink --user-auth-config`).
    HashPassword(login_cmd::HashPasswordArgs),
    /// Make the TLS certificates and SuperNode authentication keys of a deployment.
    Keygen(keygen_cmd::KeygenArgs),
    /// Manage the SuperNode keys a SuperLink admits (node authentication).
    Supernode(supernode_cmd::SupernodeArgs),
}

fn main() -> ExitCode {
    floret_transport::tls::install_crypto_provider();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit_code::USAGE as u8
            } else {
                0
            });
        }
    };
    let settings =
        match telemetry::Settings::resolve(&cli.telemetry, |k| std::env::var(k).ok(), "warn") {
            Ok(settings) => settings,
            Err(e) => return report_outcome(Err(e.into())),
        };
    // No other thread exists yet.
    telemetry::pass_on_to_children(&cli.telemetry);
    floret_app::process::run_on_runtime("flwr", &settings, None, async move {
        match cli.command {
            Command::New(args) => new_cmd::execute(args).await,
            Command::Build(args) => build_cmd::execute(args).await,
            Command::Run(args) => run_cmd::execute(args).await,
            Command::Ls(args) => ls_cmd::execute(args).await,
            Command::Log(args) => log_cmd::execute(args).await,
            Command::Stop(args) => stop_cmd::execute(args).await,
            Command::Login(args) => login_cmd::execute(args).await,
            Command::Logout(args) => login_cmd::logout(args).await,
            Command::Session(args) => session_cmd::execute(args).await,
            Command::HashPassword(args) => login_cmd::hash_password(args).await,
            Command::Keygen(args) => keygen_cmd::execute(args).await,
            Command::Supernode(args) => supernode_cmd::execute(args).await,
        }
    })
}
