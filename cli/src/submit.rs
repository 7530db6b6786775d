//! `flwr run` against a SuperLink: check the run locally so that mistakes fail before
//! anything is sent, start it (with the app's FAB when it is not built in), print its id,
//! and with `--stream` follow it to the end, saving its history files (`run_report`).

use crate::build_cmd::PackedFab;
use crate::follow::{Followed, follow, log_command};
use crate::project::Project;
use crate::registry::BuiltinCatalog;
use crate::remote::Remote;
use crate::report::{Ending, Format, HistoryTarget, Reporter};
use crate::run_cmd::{RunArgs, app_ref};
use crate::run_report::Destination;
use crate::{UserError, exit_code};
use floret_core::{AppCatalog, Federation, RunStatus, StartRun, SubStatus, UserConfig};
use serde_json::json;
use tokio::time::Instant;

/// Starts the run on the federation's SuperLink, sending `fab` for an app that is not
/// built in; returns the exit code.
pub async fn execute(
    args: &RunArgs,
    project: &Project,
    federation: &Federation,
    run_config: UserConfig,
    fab: Option<PackedFab>,
) -> anyhow::Result<i32> {
    let remote = Remote::from_federation(federation, project.dir())?;
    // The SuperLink checks again; checking here fails fast, before a connection is made.
    if let Some(server_app) = BuiltinCatalog.server_app(&project.manifest.serverapp) {
        server_app
            .check_config(&run_config)
            .map_err(|e| UserError::new(format!("{}: {e}", project.manifest_path.display())))?;
    }
    // Only a followed run has a history to save; checked before the run is started.
    let destination = if args.stream {
        Some(Destination::prepare(
            args.output_dir.as_deref(),
            project.dir(),
        )?)
    } else {
        None
    };
    let control = remote.connect().await?;
    let started = Instant::now();
    let mut app = app_ref(project);
    if let Some(fab) = &fab {
        app.fab_hash = fab.hash.clone();
        if args.format == Format::Default {
            eprintln!(
                "sending {} as a FAB of {:.1} MB (sha256 {})",
                project.manifest.name,
                fab.bytes.len() as f64 / 1e6,
                fab.hash
            );
        }
    }
    let request = StartRun {
        app,
        federation: federation.name.clone(),
        run_config,
        federation_options: federation.options.to_flat(),
        fab: fab.map(|f| f.bytes),
    };
    let run_id = control
        .start_run(request)
        .await
        .map_err(|e| remote.error(e))?;
    if !args.stream {
        match args.format {
            Format::Default => {
                crate::outln!("started run {run_id}");
                eprintln!(
                    "`flwr ls` shows its status, `{}` follows it",
                    log_command(run_id, &args.app_dir, &remote.federation)
                );
            }
            Format::Json => crate::outln!(
                "{}",
                json!({ "run_id": run_id, "federation": remote.federation })
            ),
        }
        return Ok(exit_code::OK);
    }
    if args.format == Format::Default {
        eprintln!(
            "started run {run_id} on `{}` ({}); Ctrl-C detaches, the run goes on",
            remote.federation, remote.address
        );
    }
    let mut reporter = Reporter::new(args.format);
    if let Some(destination) = destination {
        reporter = reporter.with_history(HistoryTarget {
            destination,
            app: project.manifest.name.clone(),
            federation: federation.name.clone(),
        });
    }
    let followed = match follow(control.as_ref(), run_id, true, |e| reporter.on_event(e)).await {
        Ok(followed) => followed,
        Err(e) => {
            reporter.stop_early(Ending {
                run_id,
                status: RunStatus::Running,
                reason: "the connection to the SuperLink broke",
                wall: started.elapsed(),
            });
            return Err(remote.error(e));
        }
    };
    if followed == Followed::Detached {
        reporter.stop_early(Ending {
            run_id,
            status: RunStatus::Running,
            reason: "detached: the run goes on",
            wall: started.elapsed(),
        });
        eprintln!(
            "detached from run {run_id}, which goes on: follow it again with `{}`",
            log_command(run_id, &args.app_dir, &remote.federation)
        );
        return Ok(exit_code::DETACHED);
    }
    let info = control.get_run(run_id).await.map_err(|e| remote.error(e))?;
    if !info.status.is_finished() {
        reporter.stop_early(Ending {
            run_id,
            status: info.status,
            reason: "the SuperLink stopped streaming the run",
            wall: started.elapsed(),
        });
        eprintln!(
            "error: the SuperLink stopped streaming run {run_id} while it was {}: follow it again with `{}`",
            info.status,
            log_command(run_id, &args.app_dir, &remote.federation)
        );
        return Ok(exit_code::RUN_FAILED);
    }
    reporter.finish(Ending {
        run_id,
        status: info.status,
        reason: &info.reason,
        wall: started.elapsed(),
    });
    Ok(match info.status {
        RunStatus::Finished(SubStatus::Completed) => exit_code::OK,
        _ => exit_code::RUN_FAILED,
    })
}
