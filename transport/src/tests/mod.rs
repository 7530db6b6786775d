//! Tests of the wire format: round trips of generated values, Flower-produced golden bytes,
//! and rejection (never a panic) of bad input.

mod errors;
mod golden;
mod roundtrip;
mod strategies;
