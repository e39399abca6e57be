//! Gantry's wire API, generated from `proto/gantry/v1/gantry.proto`.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("gantry.v1");
}

pub use v1::*;
