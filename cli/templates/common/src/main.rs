//! The app's executable. `flwr run .` builds it and runs it as a local simulation, or sends
//! it to a SuperLink in a FAB, where it runs as the ServerApp and the ClientApps of a run.

mod client_app;
mod server_app;
mod task;

fn main() -> std::process::ExitCode {
    floret_app::run(server_app::app, client_app::app)
}
