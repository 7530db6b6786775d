//! `<app> simulation [APP_DIR] [FEDERATION] [--run-config "k=v ..."] [--format ...]
//! [--output-dir DIR]`: the
//! app binary's local simulation of itself, which `flwr run` starts for a user's app. It is
//! `flwr run`'s simulation with the app's own ServerApp and ClientApp in place of the
//! built-in catalog, so the output and exit codes are the same.

use super::{ClientAppFn, ServerAppFn};
use crate::report::Format;
use crate::simulate::{Output, Prepared, prepare, simulate};
use crate::{UserError, exit_code, report_outcome};
use clap::Parser;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of the simulation mode.
#[derive(Debug, Parser)]
#[command(about = "Run a local simulation of this app")]
pub struct SimulationArgs {
    /// The app's directory, holding its pyproject.toml.
    #[arg(default_value = ".")]
    pub app_dir: PathBuf,
    /// A federation of [tool.flwr.federations] without an address; defaults to the one
    /// named by `default`.
    pub federation: Option<String>,
    /// Run-config overrides as TOML values: "num-server-rounds=5 lr=0.1 name='a b'".
    #[arg(long = "run-config", short = 'c', value_name = "K=V ...")]
    pub run_config: Vec<String>,
    /// Output format of the final report.
    #[arg(long, value_enum, default_value_t = Format::Default)]
    pub format: Format,
    /// Logging and tracing; quieter than the daemons, at `warn` unless `--log-level` or
    /// `RUST_LOG` says otherwise, so the report stays readable.
    #[command(flatten)]
    pub telemetry: crate::telemetry::TelemetryArgs,
    /// Where the run's history.json, history.csv and metrics.svg go; default a new
    /// APP_DIR/runs/<UTC time>-run-<id>/ per run.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

/// Parses `args` (`args[0]` names the program and mode) and runs the simulation.
pub fn run(args: Vec<OsString>, server_app: ServerAppFn, client_app: ClientAppFn) -> ExitCode {
    let args = match SimulationArgs::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit_code::USAGE as u8
            } else {
                0
            });
        }
    };
    let settings = match crate::telemetry::Settings::resolve(
        &args.telemetry,
        |k| std::env::var(k).ok(),
        "warn",
    ) {
        Ok(settings) => settings,
        Err(e) => return report_outcome(Err(e.into())),
    };
    crate::process::run_on_runtime(
        "flwr",
        &settings,
        None,
        execute(args, server_app, client_app),
    )
}

async fn execute(
    args: SimulationArgs,
    server_app: ServerAppFn,
    client_app: ClientAppFn,
) -> anyhow::Result<i32> {
    let Prepared {
        project,
        federation,
        run_config,
    } = prepare(
        &args.app_dir,
        args.federation.as_deref(),
        &args.run_config,
        "flwr run",
    )?;
    if let Some(address) = &federation.address {
        return Err(UserError::new(format!(
            "federation `{}` is a SuperLink ({address}), not a local simulation: submit the app to it with `flwr run {} {}`",
            federation.name,
            args.app_dir.display(),
            federation.name
        ))
        .into());
    }
    simulate(
        &project,
        &federation,
        run_config,
        Output {
            format: args.format,
            dir: args.output_dir.as_deref(),
        },
        server_app(),
        client_app(),
    )
    .await
}
