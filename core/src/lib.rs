//! floret-core: the vocabulary every other Floret crate speaks.
//!
//! Arrays and records, messages and their metadata, the run context, user configuration
//! (`pyproject.toml`, `--run-config`, `--node-config`) and the app traits (ClientApp,
//! ServerApp, Grid). It performs no I/O and depends on no other Floret crate, so that the
//! data model can be tested, fuzzed and reused on its own.

pub mod api;
pub mod app;
pub mod appio;
pub mod array;
pub mod codec;
pub mod context;
pub mod fab;
pub mod federation_options;
pub mod hashing;
pub mod manifest;
pub mod message;
pub mod records;
pub mod run;
pub mod run_config;
pub mod seeded;
pub mod suggest;
pub mod trace_context;
pub mod user_auth;
pub mod user_config;

pub use api::{
    Control, ControlError, Fleet, FleetError, NodeAuthority, NodeInfo, RegisterNode, Registration,
    StartRun,
};
pub use app::{
    AppCatalog, AppError, ClientApp, Grid, GridError, Mod, ModelSize, Next, NodeSet, PhaseSummary,
    ReplyFold, RoundSummary, RunEvent, ServerApp,
};
pub use appio::{AppIoError, AppOutcome, ClientAppIo, ClientTask, ServerAppIo};
pub use array::{Array, ArrayError, DType, Element, STYPE_RAW};
pub use context::Context;
pub use fab::{AnyFab, Fab, FabError, FabFormat, FabManifest, HOST_TARGET, fab_hash};
pub use federation_options::{
    ByzantineMode, ChaosOptions, ClientResources, FederationOptions, OptionError,
};
pub use manifest::{AppManifest, Federation, ManifestError};
pub use message::{Message, MessageError, Metadata, Payload, error_code, message_type};
pub use records::{
    ArrayRecord, ConfigRecord, ConfigValue, MetricRecord, MetricValue, Record, RecordDict,
    RecordError,
};
pub use run::{AppRef, InvalidTransition, RunInfo, RunStatus, SubStatus};
pub use run_config::ConfigError;
pub use user_auth::{
    Caller, ControlFor, Credentials, SessionInfo, SessionSelector, Tokens, UserAuthError,
    UserAuthority,
};
pub use user_config::{UserConfig, UserConfigValue};
