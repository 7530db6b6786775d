//! The server side of a federation: everything the SuperLink process runs.
//!
//! ```text
//! SuperLinkService (server process: `service`)
//!  ├─ SuperLink (root supervisor: `root`)
//!  │   └─ Run (one per run: `run`; how every run ends: `run_end`)
//!  │       └─ ServerAppHost (the run's ServerApp: `server_app_host`, over `grid`, or on
//!  │           a `--simulation` SuperLink over a virtual fleet of its own: `virtual_fleet`)
//!  │           └─ app process of a FAB run, over `LinkAppIo` (`appio`, `fabs`)
//!  ├─ sweeper (heartbeat leases, message TTLs, retention of finished runs: `sweeper`)
//!  ├─ LinkFleet (Fleet API: `fleet`; one delivery task per subscribed node: `delivery`)
//!  └─ LinkControl (Control API: `control`)
//! ```
//! This room owns the SuperLink's actors and the faces it shows (Fleet, Control, AppIo,
//! FAB fetches). It keeps its data in the `LinkState` (`crate::state`), takes its timing
//! decisions from `crate::policy`, runs app processes through `crate::apps` and checks
//! users through `crate::user_auth`. It never reaches into the SuperNode's room.

pub mod appio;
pub mod control;
pub(crate) mod delivery;
pub mod fabs;
pub mod fleet;
pub mod grid;
pub mod limits;
pub mod root;
pub mod run;
pub(crate) mod run_end;
pub mod server_app_host;
pub mod service;
pub(crate) mod sweeper;
pub mod virtual_fleet;

pub use root::{RunControlError, SuperLink, SuperLinkMsg};
