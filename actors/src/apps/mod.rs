//! Running apps: a ClientApp's handlers in-process, and a FAB's ServerApp or ClientApp as a
//! process of its own.
//!
//! `client_exec` runs a handler and turns failures and panics into error replies;
//! `isolation` decides how a FAB's app runs and launches it; `app_process` supervises the
//! processes so that none outlives its run; `fab_cache` keeps verified FABs on disk.
//! Both daemons use this room (the SuperLink for ServerApps, the SuperNode for
//! ClientApps); it depends on floret-core only and on nothing else in this crate but
//! `meter`.

pub mod app_process;
pub mod client_exec;
pub mod fab_cache;
pub mod isolation;
