//! The generated wire types: Flower's data messages (`flwr.proto`, from
//! `proto/flwr/proto/*.proto`) and Floret's services (`floret.v1`, from
//! `proto/floret/v1/*.proto`), checked in under `src/generated/` so that a build needs no
//! `.proto` compiler; `tests/generated.rs` checks them against the `.proto` files and says
//! how to refresh them.
//!
//! Crate-private on purpose: other crates see core types and bytes, never wire types, so the
//! schema can change without touching them.

// Generated code: not every type is used yet (Node serves the services to come),
// and its style is prost's and tonic's, not ours.
#![allow(dead_code, unreachable_pub, clippy::all, clippy::pedantic)]

/// Package `flwr.proto`. Nested as the package name is, because generated code of one
/// package names another's types by relative path (`super::super::flwr::proto::Message`).
pub(crate) mod flwr {
    pub(crate) mod proto {
        include!("generated/flwr.proto.rs");
    }
}

/// Package `floret.v1`: the Fleet, Control and AppIo services and their messages.
pub(crate) mod floret {
    pub(crate) mod v1 {
        include!("generated/floret.v1.rs");
    }
}

pub(crate) use floret::v1;
pub(crate) use flwr::proto::*;
